package io.solray.tests;

import io.ray.api.Ray;
import java.nio.file.Path;
import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * One cluster for the whole test run (kept in the root context's store,
 * which closes it when the run ends), and Ray.init() around each test class:
 * the driver's code search path is the test classes directory, which holds
 * the Java classes the tasks run and the Python module (solray_java_test.py)
 * the Python calls import; the runtime adds its own classes.
 */
public final class ClusterExtension implements BeforeAllCallback, AfterAllCallback {
  private static TestCluster cluster;

  static TestCluster cluster() {
    return cluster;
  }

  @Override
  public void beforeAll(ExtensionContext context) throws Exception {
    cluster = context.getRoot().getStore(ExtensionContext.Namespace.GLOBAL)
        .getOrComputeIfAbsent(TestCluster.class, k -> {
          try {
            return TestCluster.start();
          } catch (Exception e) {
            throw new IllegalStateException(e);
          }
        }, TestCluster.class);
    Path testClasses = Path.of(ClusterExtension.class.getProtectionDomain().getCodeSource().getLocation().toURI());
    System.setProperty("ray.address", cluster.address());
    System.setProperty("ray.job.code-search-path", testClasses.toString());
    Ray.init();
  }

  @Override
  public void afterAll(ExtensionContext context) {
    Ray.shutdown();
    System.clearProperty("ray.address");
    System.clearProperty("ray.job.code-search-path");
  }
}
