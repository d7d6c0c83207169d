package io.solray.tests;

import org.junit.jupiter.api.extension.ExtendWith;

/** For tests in other packages: the shared cluster's client server address. */
@ExtendWith(ClusterExtension.class)
public abstract class ClusterAccess {
  protected static String address() {
    return ClusterExtension.cluster().address();
  }
}
