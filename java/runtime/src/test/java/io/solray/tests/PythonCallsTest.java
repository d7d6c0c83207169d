package io.solray.tests;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.ray.api.ObjectRef;
import io.ray.api.PyActorHandle;
import io.ray.api.Ray;
import io.ray.api.exception.CrossLanguageException;
import io.ray.api.exception.RayException;
import io.ray.api.exception.RayTaskException;
import io.ray.api.function.PyActorClass;
import io.ray.api.function.PyActorMethod;
import io.ray.api.function.PyFunction;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/** Python functions and actors called from Java (solray_java_test.py in the test resources). */
@ExtendWith(ClusterExtension.class)
class PythonCallsTest {
  private static final String MODULE = "solray_java_test";

  @Test
  void pythonFunctionsRunAsTasks() {
    PyFunction<Integer> add = PyFunction.of(MODULE, "add", Integer.class);
    assertEquals(3, Ray.task(add, 1, 2).remote().get());
    ObjectRef<Integer> two = Ray.put(2);
    assertEquals(4, Ray.task(add, two, two).remote().get());
    assertEquals(2.5, Ray.task(PyFunction.of(MODULE, "divide", Double.class), 5, 2).remote().get());
    Object echoed = Ray.task(PyFunction.of(MODULE, "echo"), Map.of("k", List.of(1, "x"))).remote().get();
    assertEquals(Map.of("k", List.of(1, "x")), echoed);
    assertArrayEquals(new long[] {0, 1, 2}, Ray.task(PyFunction.of(MODULE, "arange", long[].class), 3).remote().get());
  }

  @Test
  void pythonActorsFromJava() {
    PyActorHandle counter = Ray.actor(PyActorClass.of(MODULE, "Counter"), 5).setName("py-counter").remote();
    PyActorMethod<Integer> increment = PyActorMethod.of("increment", Integer.class);
    assertEquals(6, counter.task(increment).remote().get());
    assertEquals(16, counter.task(increment, 10).remote().get());
    Optional<PyActorHandle> found = Ray.getActor("py-counter");
    assertTrue(found.isPresent());
    assertEquals("Counter", found.get().getClassName());
    assertEquals(17, found.get().task(increment).remote().get());
  }

  @Test
  void aPythonExceptionReachesJavaWithThePythonTraceback() {
    RayTaskException e = assertThrows(RayTaskException.class,
        () -> Ray.task(PyFunction.of(MODULE, "divide", Double.class), 1, 0).remote().get());
    assertTrue(e.getMessage().contains("ZeroDivisionError"), e.getMessage());
    assertTrue(e.getMessage().contains("solray_java_test.py"), e.getMessage());
    assertTrue(e.getMessage().contains("return a / b"), e.getMessage());
    CrossLanguageException cause = assertInstanceOf(CrossLanguageException.class, e.getCause());
    assertEquals("ZeroDivisionError", cause.getTypeName());
    assertEquals("python", cause.getLanguage());
  }

  @Test
  void aMissingPythonFunctionIsRefusedWhenSubmitted() {
    RayException e = assertThrows(RayException.class,
        () -> Ray.task(PyFunction.of(MODULE, "no_such_function")).remote());
    assertTrue(e.getMessage().contains("no_such_function"), e.getMessage());
  }
}
