package io.ray.api.call;

import io.ray.api.ObjectRef;
import io.ray.api.function.RayFuncR;
import io.solray.runtime.SolrayRuntime;

/** {@code Ray.task(C::staticMethod, args...)}: call {@link #remote()} to submit it. */
public class TaskCaller<R> extends BaseTaskCaller<TaskCaller<R>> {
  private final RayFuncR<R> func;
  private final Object[] args;

  public TaskCaller(RayFuncR<R> func, Object[] args) {
    this.func = func;
    this.args = args;
  }

  public ObjectRef<R> remote() {
    return SolrayRuntime.get().submitJavaTask(func, args, options());
  }
}
