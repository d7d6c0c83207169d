package io.solray.tests;

/** A Java actor. */
public class Counter {
  private int value;

  public Counter() {
    this(0);
  }

  public Counter(int start) {
    value = start;
  }

  public int increment() {
    return ++value;
  }

  public int add(int by) {
    value += by;
    return value;
  }

  public void reset() {
    value = 0;
  }

  public int fail() {
    throw new IllegalStateException("counter at " + value + " refuses");
  }
}
