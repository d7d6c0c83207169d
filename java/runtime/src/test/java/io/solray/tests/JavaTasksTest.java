package io.solray.tests;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.ray.api.ActorHandle;
import io.ray.api.ObjectRef;
import io.ray.api.Ray;
import io.ray.api.exception.RayActorException;
import io.ray.api.exception.RayTaskException;
import io.ray.api.function.RayFunc1;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/** Java tasks and actors, run by the JVMs the cluster's workers start. */
@ExtendWith(ClusterExtension.class)
class JavaTasksTest {
  @Test
  void staticMethodsRunAsTasks() {
    assertEquals(3, Ray.task(Calc::add, 1, 2).remote().get());
    ObjectRef<Integer> one = Ray.put(1);
    assertEquals(5, Ray.task(Calc::add, one, Ray.task(Calc::add, 2, 2).remote()).remote().get());
    assertEquals(List.of(0, 1, 2), Ray.task(Calc::range, 3).remote().get());
    assertArrayEquals(new double[] {1.0, 5.0}, Ray.task(Calc::scale, new double[] {0.5, 2.5}, 2.0).remote().get());
    assertEquals(Long.MAX_VALUE, Ray.task(Calc::largest).remote().get());
    assertEquals(2, Ray.task(Calc::sizeOf, Map.of("a", 1, "b", 2)).remote().get());
    Ray.task(Calc::log, "printed by a Java task").remote(); // a void task: no ref
    // System.out goes to the worker's log: a print on the JVM's stdout, which
    // carries the answers, would end the JVM and fail the call.
    assertEquals("printed", Ray.task(Calc::printAndReturn, "printed").remote().get());
  }

  @Test
  void overloadsAreChosenByTheArguments() {
    // An overloaded method reference needs its type spelled out (as in Ray): the
    // JVM that runs it picks the overload that takes the arguments.
    ObjectRef<String> byInt = Ray.task((RayFunc1<Integer, String>) Calc::describe, 5).remote();
    ObjectRef<String> byString = Ray.task((RayFunc1<String, String>) Calc::describe, "five").remote();
    assertEquals("int 5", byInt.get());
    assertEquals("string five", byString.get());
  }

  @Test
  void taskOptionsReachTheCluster() {
    assertEquals(3, Ray.task(Calc::add, 1, 2).setName("adder").setResource("CPU", 1.0).remote().get());
    ObjectRef<Integer> infeasible = Ray.task(Calc::add, 1, 2).setResource("no-such-resource", 1.0).remote();
    // Nothing offers the resource: the task waits (Ray's infeasible task), it does not run.
    assertEquals(List.of(), Ray.wait(List.of(infeasible), 1, 3000).getReady());
  }

  @Test
  void aJavaExceptionReachesTheDriverWithItsStackTrace() {
    RayTaskException e = assertThrows(RayTaskException.class, () -> Ray.task(Calc::divide, 1, 0).remote().get());
    assertTrue(e.getMessage().contains("java.lang.ArithmeticException: / by zero"), e.getMessage());
    assertTrue(e.getMessage().contains("at io.solray.tests.Calc.divide(Calc.java"), e.getMessage());
    assertInstanceOf(ArithmeticException.class, e.getCause());
    assertEquals("/ by zero", e.getCause().getMessage());
  }

  @Test
  void aLambdaIsRefusedWithWhatToPassInstead() {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Ray.task(() -> 1).remote());
    assertTrue(e.getMessage().contains("method reference"), e.getMessage());
  }

  @Test
  void javaActorsKeepStateAndCanBeFoundByName() {
    ActorHandle<Counter> counter = Ray.actor(Counter::new, 10).setName("java-counter").remote();
    assertEquals(11, counter.task(Counter::increment).remote().get());
    assertEquals(16, counter.task(Counter::add, 5).remote().get());

    Optional<ActorHandle<Counter>> found = Ray.getActor("java-counter");
    assertTrue(found.isPresent());
    assertEquals(17, found.get().task(Counter::increment).remote().get());
    assertTrue(Ray.getActor("no-such-actor").isEmpty());

    RayTaskException e = assertThrows(RayTaskException.class, () -> counter.task(Counter::fail).remote().get());
    assertInstanceOf(IllegalStateException.class, e.getCause());
    assertTrue(e.getMessage().contains("counter at 17 refuses"), e.getMessage());
    assertEquals(18, counter.task(Counter::increment).remote().get()); // it survived its method's error
    counter.task(Counter::reset).remote(); // a void method
    assertEquals(1, counter.task(Counter::increment).remote().get());

    ActorHandle<Counter> fresh = Ray.actor(Counter::new).remote();
    assertEquals(1, fresh.task(Counter::increment).remote().get());
    fresh.kill();
    assertThrows(RayActorException.class, () -> fresh.task(Counter::increment).remote().get());
  }

  @Test
  void droppingTheLastHandleReleasesTheActor() {
    ActorHandle<Counter> kept = Ray.actor(Counter::new).setName("kept").remote();
    ActorHandle<Counter> dropped = Ray.actor(Counter::new).setName("dropped").remote();
    assertEquals(1, dropped.task(Counter::increment).remote().get());
    dropped = null; // the last handle: once collected, the cluster is told, and the actor ends
    TestCluster.waitFor(() -> {
      System.gc();
      return Ray.getActor("dropped").isEmpty();
    }, Duration.ofSeconds(30), () -> "the actor whose handle was dropped is still alive");
    assertEquals(1, kept.task(Counter::increment).remote().get()); // a held handle keeps its actor
    assertTrue(Ray.getActor("kept").isPresent());
  }
}
