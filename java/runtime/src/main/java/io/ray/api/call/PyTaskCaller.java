package io.ray.api.call;

import io.ray.api.ObjectRef;
import io.ray.api.function.PyFunction;
import io.solray.runtime.SolrayRuntime;

/** {@code Ray.task(PyFunction.of(...), args...)}: call {@link #remote()} to submit it. */
public class PyTaskCaller<R> extends BaseTaskCaller<PyTaskCaller<R>> {
  private final PyFunction<R> func;
  private final Object[] args;

  public PyTaskCaller(PyFunction<R> func, Object[] args) {
    this.func = func;
    this.args = args;
  }

  public ObjectRef<R> remote() {
    return SolrayRuntime.get().submitPythonTask(func, args, options());
  }
}
