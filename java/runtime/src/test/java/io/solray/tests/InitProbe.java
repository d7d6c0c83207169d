package io.solray.tests;

import io.ray.api.Ray;

/** A driver in a JVM of its own, configured by the environment alone (InitFromEnvironmentTest). */
public final class InitProbe {
  public static void main(String[] args) {
    try {
      Ray.init();
      System.out.println("got " + Ray.put(41).get());
      Ray.shutdown();
    } catch (RuntimeException e) {
      System.out.println(e.getClass().getSimpleName() + ": " + e.getMessage());
      System.exit(3);
    }
  }
}
