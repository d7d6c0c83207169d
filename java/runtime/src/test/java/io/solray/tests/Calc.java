package io.solray.tests;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/** Static methods the tests run as Java tasks. */
public class Calc {
  public static int add(int a, int b) {
    return a + b;
  }

  public static int divide(int a, int b) {
    return a / b;
  }

  public static String describe(int x) {
    return "int " + x;
  }

  public static String describe(String s) {
    return "string " + s;
  }

  public static List<Integer> range(int n) {
    List<Integer> out = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      out.add(i);
    }
    return out;
  }

  public static double[] scale(double[] xs, double k) {
    double[] out = new double[xs.length];
    for (int i = 0; i < xs.length; i++) {
      out[i] = xs[i] * k;
    }
    return out;
  }

  public static long largest() {
    return Long.MAX_VALUE;
  }

  public static int sizeOf(Map<String, Integer> m) {
    return m.size();
  }

  public static long sleepMs(long ms) throws InterruptedException {
    Thread.sleep(ms);
    return ms;
  }

  public static void log(String line) {
    System.out.println(line); // to the worker's log (the JVM's stdout carries frames)
  }

  public static String printAndReturn(String line) {
    System.out.println(line);
    System.out.flush();
    return line;
  }
}
