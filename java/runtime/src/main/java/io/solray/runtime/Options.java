package io.solray.runtime;

import java.util.LinkedHashMap;
import java.util.Map;

/** Ray Java's resource map as the option keys of the cross-language messages. */
public final class Options {
  private Options() {}

  /**
   * "CPU", "GPU" and "memory" are solray's num_cpus, num_gpus and memory (as
   * Ray Java's setResource("CPU", 2.0) means); other names are custom resources.
   */
  public static void putResources(Map<String, Double> resources, Map<String, Object> out) {
    Map<String, Object> custom = new LinkedHashMap<>();
    for (Map.Entry<String, Double> e : resources.entrySet()) {
      if (e.getValue() == null) {
        throw new IllegalArgumentException("resource " + e.getKey() + " has no quantity (null)");
      }
      switch (e.getKey()) {
        case "CPU" -> out.put("num_cpus", e.getValue());
        case "GPU" -> out.put("num_gpus", e.getValue());
        case "memory" -> out.put("memory", e.getValue());
        default -> custom.put(e.getKey(), e.getValue());
      }
    }
    if (!custom.isEmpty()) {
      out.put("resources", custom);
    }
  }
}
