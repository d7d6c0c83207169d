package io.ray.api.call;

import io.ray.api.function.RayFuncVoid;
import io.solray.runtime.SolrayRuntime;

/** {@code Ray.task(C::voidMethod, args...)}: submitted by {@link #remote()}, no result. */
public class VoidTaskCaller extends BaseTaskCaller<VoidTaskCaller> {
  private final RayFuncVoid func;
  private final Object[] args;

  public VoidTaskCaller(RayFuncVoid func, Object[] args) {
    this.func = func;
    this.args = args;
  }

  public void remote() {
    SolrayRuntime.get().submitJavaTask(func, args, options()); // the ref is dropped: released once collected
  }
}
