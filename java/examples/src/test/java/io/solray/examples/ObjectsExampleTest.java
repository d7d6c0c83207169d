package io.solray.examples;

import io.solray.tests.TestCluster;
import org.junit.jupiter.api.Test;

/**
 * The Objects page's Java code runs as written (ObjectsExample's asserts are
 * the page's), against a cluster `solray start --head` started, with the
 * driver's default code search path: its own classpath.
 */
class ObjectsExampleTest {
  @Test
  void theObjectsPageRuns() throws Exception {
    TestCluster cluster = TestCluster.start();
    try {
      System.setProperty("ray.address", cluster.address());
      ObjectsExample.main(new String[0]);
    } finally {
      System.clearProperty("ray.address");
      cluster.stop();
    }
  }
}
