package io.solray.runtime;

import io.ray.api.PyActorHandle;
import java.util.HexFormat;

/** A Python actor this driver holds a handle to. */
final class PythonActorHandle implements PyActorHandle {
  final SolrayRuntime runtime;
  final byte[] id;
  private final String moduleName;
  private final String className;

  PythonActorHandle(SolrayRuntime runtime, byte[] id, String moduleName, String className) {
    this.runtime = runtime;
    this.id = id;
    this.moduleName = moduleName;
    this.className = className;
  }

  @Override
  public String getModuleName() {
    return moduleName;
  }

  @Override
  public String getClassName() {
    return className;
  }

  @Override
  public void kill(boolean noRestart) {
    runtime.killActor(id, noRestart);
  }

  @Override
  public String toString() {
    return "PyActorHandle(" + moduleName + "." + className + ", " + HexFormat.of().formatHex(id) + ")";
  }
}
