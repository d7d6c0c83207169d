package io.solray.examples;

import java.util.concurrent.TimeUnit;

// From the Objects page, as written.
public class MyRayApp {
  public static int slowFunction() throws InterruptedException {
    TimeUnit.SECONDS.sleep(10);
    return 1;
  }
}
