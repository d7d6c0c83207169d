package io.solray.examples;

import com.google.common.collect.ImmutableList;
import io.ray.api.ObjectRef;
import io.ray.api.Ray;
import io.ray.api.exception.RayTimeoutException;
import java.util.ArrayList;
import java.util.List;
import org.junit.Assert;

/**
 * The Java examples of the Objects page, as written, in a main. Run it
 * against a cluster that `solray start --head` started (README, "Java"):
 *
 * <pre>
 *   SOLRAY_TOKEN_FILE=/path/to/token java -Dray.address=HOST:10001 -jar java/examples/target/solray-java-examples.jar
 * </pre>
 */
public class ObjectsExample {
  public static void main(String[] args) {
    Ray.init();
    try {
      // Put an object in Ray's object store.
      int y = 1;
      ObjectRef<Integer> objectRef = Ray.put(y);

      // Get the value of one object ref.
      ObjectRef<Integer> objRef = Ray.put(1);
      Assert.assertTrue(objRef.get() == 1);
      // You can also set a timeout(ms) to return early from a ``get`` that's blocking for too long.
      Assert.assertTrue(objRef.get(1000) == 1);

      // Get the values of multiple object refs in parallel.
      List<ObjectRef<Integer>> objectRefs = new ArrayList<>();
      for (int i = 0; i < 3; i++) {
        objectRefs.add(Ray.put(i));
      }
      List<Integer> results = Ray.get(objectRefs);
      Assert.assertEquals(results, ImmutableList.of(0, 1, 2));

      // Ray.get timeout example: Ray.get will throw an RayTimeoutException if time out.
      Assert.assertThrows(RayTimeoutException.class,
        () -> Ray.get(Ray.task(MyRayApp::slowFunction).remote(), 3000));

      System.out.println("The Objects page's Java examples ran: put " + objectRef.get()
          + ", get " + results + ", and Ray.get timed out as it should.");
    } finally {
      Ray.shutdown();
    }
  }
}
