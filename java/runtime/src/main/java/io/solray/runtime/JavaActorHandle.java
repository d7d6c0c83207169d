package io.solray.runtime;

import io.ray.api.ActorHandle;
import java.util.HexFormat;

/** A Java actor this driver holds a handle to. */
final class JavaActorHandle<A> implements ActorHandle<A> {
  final SolrayRuntime runtime;
  final byte[] id;
  final String className;

  JavaActorHandle(SolrayRuntime runtime, byte[] id, String className) {
    this.runtime = runtime;
    this.id = id;
    this.className = className;
  }

  @Override
  public void kill(boolean noRestart) {
    runtime.killActor(id, noRestart);
  }

  @Override
  public String toString() {
    return "ActorHandle(" + className + ", " + HexFormat.of().formatHex(id) + ")";
  }
}
