package io.ray.api.call;

import io.solray.runtime.Options;
import java.util.LinkedHashMap;
import java.util.Map;

/** The options every task call takes (Ray's BaseTaskCaller). */
public class BaseTaskCaller<T extends BaseTaskCaller<T>> {
  private final Map<String, Object> options = new LinkedHashMap<>();
  private final Map<String, Double> resources = new LinkedHashMap<>();

  /** The task's name (in the dashboard and `solray list tasks`). */
  public T setName(String name) {
    options.put("name", name);
    return self();
  }

  /** A resource the task needs: "CPU", "GPU", "memory" (bytes) or a custom one. */
  public T setResource(String name, Double value) {
    resources.put(name, value);
    return self();
  }

  public T setResources(Map<String, Double> resources) {
    this.resources.putAll(resources);
    return self();
  }

  @SuppressWarnings("unchecked")
  private T self() {
    return (T) this;
  }

  /** The XLANG_SUBMIT_TASK options these settings make. */
  protected Map<String, Object> options() {
    Map<String, Object> out = new LinkedHashMap<>(options);
    Options.putResources(resources, out);
    return out;
  }
}
