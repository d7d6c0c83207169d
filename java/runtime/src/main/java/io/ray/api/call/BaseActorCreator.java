package io.ray.api.call;

import io.ray.api.options.ActorLifetime;
import io.solray.runtime.Options;
import java.util.LinkedHashMap;
import java.util.Map;

/** The options every actor creation takes (Ray's BaseActorCreator). */
public class BaseActorCreator<T extends BaseActorCreator<T>> {
  private final Map<String, Object> options = new LinkedHashMap<>();
  private final Map<String, Double> resources = new LinkedHashMap<>();

  /** Name the actor, for {@code Ray.getActor(name)} (in the job's namespace). */
  public T setName(String name) {
    options.put("name", name);
    return self();
  }

  /** Name the actor in the given namespace. */
  public T setName(String name, String namespace) {
    options.put("name", name);
    options.put("namespace", namespace);
    return self();
  }

  public T setLifetime(ActorLifetime lifetime) {
    options.put("lifetime", lifetime == ActorLifetime.DETACHED ? "detached" : null);
    return self();
  }

  /** A resource the actor holds for its life: "CPU", "GPU", "memory" (bytes) or a custom one. */
  public T setResource(String name, Double value) {
    resources.put(name, value);
    return self();
  }

  public T setResources(Map<String, Double> resources) {
    this.resources.putAll(resources);
    return self();
  }

  /** How many times the actor restarts when its process dies (-1: without limit). */
  public T setMaxRestarts(int maxRestarts) {
    options.put("max_restarts", maxRestarts);
    return self();
  }

  /** How many calls the actor runs at once (threads). */
  public T setMaxConcurrency(int maxConcurrency) {
    options.put("max_concurrency", maxConcurrency);
    return self();
  }

  @SuppressWarnings("unchecked")
  private T self() {
    return (T) this;
  }

  /** The XLANG_CREATE_ACTOR options these settings make. */
  protected Map<String, Object> options() {
    Map<String, Object> out = new LinkedHashMap<>(options);
    Options.putResources(resources, out);
    return out;
  }
}
