package io.solray.runtime;

import io.ray.api.exception.RayException;
import java.io.File;
import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;

/**
 * What Ray.init() connects with, from system properties (Ray Java's names)
 * and the environment. The token is read only from the environment
 * (SOLRAY_TOKEN, else the file SOLRAY_TOKEN_FILE names), never from a system
 * property: a command line is readable by every local user.
 */
record DriverConfig(
    String host,
    int port,
    byte[] token,
    String namespace,
    List<String> codeSearchPath,
    List<String> jvmOptions) {

  static final int DEFAULT_PORT = 10001;
  private static final int MAX_TOKEN_BYTES = 1024;
  private static final Set<String> KNOWN =
      Set.of("ray.address", "ray.job.code-search-path", "ray.job.namespace", "ray.job.jvm-options");

  static DriverConfig fromEnvironment() {
    Set<String> unknown = new TreeSet<>();
    for (String name : System.getProperties().stringPropertyNames()) {
      if (name.startsWith("ray.") && !KNOWN.contains(name)) {
        unknown.add(name);
      }
    }
    if (!unknown.isEmpty()) {
      throw new RayException("Ray.init(): solray's Java client does not support " + unknown
          + "; it reads " + new TreeSet<>(KNOWN));
    }
    String address = System.getProperty("ray.address");
    if (address == null || address.isBlank()) {
      address = System.getenv("RAY_ADDRESS");
    }
    if (address == null || address.isBlank()) {
      throw new RayException("Ray.init(): no cluster address: give -Dray.address=HOST:PORT (or set"
          + " RAY_ADDRESS), the client server `solray start --head` printed (port "
          + DEFAULT_PORT + " by default)");
    }
    address = address.strip();
    if (address.startsWith("ray://")) {
      address = address.substring("ray://".length());
    }
    String host = address;
    int port = DEFAULT_PORT;
    int colon = address.lastIndexOf(':');
    if (colon >= 0 && address.indexOf(']') < colon) {
      host = address.substring(0, colon);
      try {
        port = Integer.parseInt(address.substring(colon + 1));
      } catch (NumberFormatException e) {
        throw new RayException("Ray.init(): the address " + address + " must be HOST:PORT");
      }
    }
    host = host.replace("[", "").replace("]", "");
    return new DriverConfig(
        host,
        port,
        readToken(),
        blankToNull(System.getProperty("ray.job.namespace")),
        readCodeSearchPath(),
        readJvmOptions());
  }

  private static String blankToNull(String s) {
    return s == null || s.isBlank() ? null : s;
  }

  private static byte[] readToken() {
    String text;
    String source;
    String inline = System.getenv("SOLRAY_TOKEN");
    String file = System.getenv("SOLRAY_TOKEN_FILE");
    if (inline != null && !inline.isEmpty()) {
      text = inline;
      source = "SOLRAY_TOKEN";
    } else if (file != null && !file.isEmpty()) {
      try {
        text = Files.readString(Path.of(file));
      } catch (IOException e) {
        throw new RayException("Ray.init(): cannot read the cluster token file " + file
            + " (SOLRAY_TOKEN_FILE): " + e.getMessage());
      }
      source = file + " (SOLRAY_TOKEN_FILE)";
    } else {
      throw new RayException("Ray.init(): no cluster token: set SOLRAY_TOKEN_FILE to the token file"
          + " `solray start --head` printed (or SOLRAY_TOKEN to its hex)");
    }
    byte[] token;
    try {
      token = HexFormat.of().parseHex(text.strip());
    } catch (IllegalArgumentException e) {
      throw new RayException("Ray.init(): the cluster token in " + source + " must be hex");
    }
    if (token.length == 0 || token.length > MAX_TOKEN_BYTES) {
      throw new RayException("Ray.init(): the cluster token in " + source + " must hold 1 to "
          + MAX_TOKEN_BYTES + " bytes, not " + token.length);
    }
    return token;
  }

  /**
   * Where the cluster's JVMs find this job's classes: ray.job.code-search-path
   * (paths separated by ':'), by default this JVM's own classpath; plus this
   * runtime's jar (or classes directory), which the JVM executor lives in. All
   * absolute: the workers run elsewhere.
   */
  private static List<String> readCodeSearchPath() {
    String given = System.getProperty("ray.job.code-search-path");
    String path = given != null && !given.isBlank() ? given : System.getProperty("java.class.path", "");
    Set<String> entries = new LinkedHashSet<>();
    for (String entry : path.split(File.pathSeparator)) {
      if (!entry.isBlank()) {
        entries.add(new File(entry).getAbsolutePath());
      }
    }
    entries.add(locationOf(SolrayRuntime.class));
    entries.add(locationOf(org.msgpack.core.MessagePack.class));
    return new ArrayList<>(entries);
  }

  private static String locationOf(Class<?> c) {
    try {
      return new File(c.getProtectionDomain().getCodeSource().getLocation().toURI()).getAbsolutePath();
    } catch (URISyntaxException | NullPointerException e) {
      throw new RayException("cannot tell where " + c.getName() + " was loaded from", e);
    }
  }

  private static List<String> readJvmOptions() {
    String given = System.getProperty("ray.job.jvm-options");
    List<String> out = new ArrayList<>();
    if (given != null) {
      for (String option : given.strip().split("\\s+")) {
        if (!option.isEmpty()) {
          out.add(option);
        }
      }
    }
    return out;
  }
}
