package io.solray.tests;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.ray.api.ObjectRef;
import io.ray.api.Ray;
import io.ray.api.WaitResult;
import io.ray.api.exception.RayTimeoutException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/** The Objects page's Java examples, and the values that cross. */
@ExtendWith(ClusterExtension.class)
class ObjectsTest {
  @Test
  void putAndGetAsTheObjectsPageDoes() {
    // Put an object in Ray's object store.
    int y = 1;
    ObjectRef<Integer> objectRef = Ray.put(y);
    assertEquals(1, objectRef.get());

    // Get the value of one object ref.
    ObjectRef<Integer> objRef = Ray.put(1);
    assertTrue(objRef.get() == 1);
    assertTrue(objRef.get(1000) == 1);
    assertEquals(1, Ray.get(objRef));
    assertEquals(1, Ray.get(objRef, 1000));

    // Get the values of multiple object refs in parallel.
    List<ObjectRef<Integer>> objectRefs = new ArrayList<>();
    for (int i = 0; i < 3; i++) {
      objectRefs.add(Ray.put(i));
    }
    List<Integer> results = Ray.get(objectRefs);
    assertEquals(List.of(0, 1, 2), results);
  }

  @Test
  void getTimesOutAsTheObjectsPageDoes() {
    long start = System.nanoTime();
    assertThrows(RayTimeoutException.class,
        () -> Ray.get(Ray.task(MyRayApp::slowFunction).remote(), 3000));
    long elapsedMs = (System.nanoTime() - start) / 1_000_000;
    assertTrue(elapsedMs >= 3000 && elapsedMs < 9000, "timed out after " + elapsedMs + " ms");
  }

  @Test
  void valuesCrossAsTheyWere() {
    assertEquals(Long.MAX_VALUE, Ray.put(Long.MAX_VALUE).get());
    assertEquals(2.5, Ray.put(2.5).get());
    assertEquals("héllo", Ray.put("héllo").get());
    assertEquals(true, Ray.put(true).get());
    assertNull(Ray.put(null).get());
    assertArrayEquals(new byte[] {1, 2, 3}, Ray.put(new byte[] {1, 2, 3}).get());
    assertArrayEquals(new int[] {1, -2, 3}, Ray.put(new int[] {1, -2, 3}).get());
    assertArrayEquals(new double[] {0.5, 1e300}, Ray.put(new double[] {0.5, 1e300}).get());
    assertEquals(List.of("a", "b"), Ray.put(List.of("a", "b")).get());
    Map<String, Object> nested = new LinkedHashMap<>();
    nested.put("xs", List.of(1, 2));
    nested.put("n", null);
    assertEquals(nested, Ray.put(nested).get());
  }

  @Test
  void aValueWithoutACrossLanguageFormIsRefusedByName() {
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> Ray.put(new StringBuilder("x")));
    assertTrue(e.getMessage().contains("java.lang.StringBuilder"), e.getMessage());
  }

  @Test
  void waitReturnsTheReadyAndTheRest() {
    ObjectRef<Long> slow = Ray.task(Calc::sleepMs, 20_000L).remote();
    ObjectRef<Integer> ready = Ray.put(7);
    List<ObjectRef<Object>> refs = List.of(cast(slow), cast(ready));
    WaitResult<Object> first = Ray.wait(refs, 1, 5000);
    assertEquals(List.of(refs.get(1)), first.getReady());
    assertEquals(List.of(refs.get(0)), first.getUnready());

    ObjectRef<Long> quick = Ray.task(Calc::sleepMs, 200L).remote();
    List<ObjectRef<Long>> both = List.of(quick, Ray.put(1L));
    WaitResult<Long> all = Ray.wait(both);
    assertEquals(both, all.getReady());
    assertEquals(List.of(), all.getUnready());
    assertEquals(List.of(200L, 1L), Ray.get(all.getReady()));

    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Ray.wait(both, 3));
    assertTrue(e.getMessage().contains("numReturns"), e.getMessage());
  }

  @SuppressWarnings("unchecked")
  private static ObjectRef<Object> cast(ObjectRef<?> ref) {
    return (ObjectRef<Object>) ref;
  }
}
