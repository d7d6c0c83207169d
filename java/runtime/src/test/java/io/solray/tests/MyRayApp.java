package io.solray.tests;

import java.util.concurrent.TimeUnit;

// The Objects page's task, as written.
public class MyRayApp {
  public static int slowFunction() throws InterruptedException {
    TimeUnit.SECONDS.sleep(10);
    return 1;
  }
}
