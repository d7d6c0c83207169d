package io.solray.runtime;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.lang.reflect.Constructor;
import java.lang.reflect.Executable;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.Type;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The JVM a Python worker starts for its Java tasks and actors
 * (XLANG_SPEC.md, "JVM child protocol"): requests come as frames on stdin,
 * answers go as REPLY frames on the original stdout, which nothing else may
 * write to; System.out is pointed at stderr, so a task's prints land in the
 * worker's log as a Python task's do. Each request runs on its own thread
 * (static calls may overlap; the worker sends an actor's calls one at a
 * time); answers are written whole under the output's lock. The JVM exits
 * when stdin closes: its worker is gone.
 */
public final class JavaExecutor {
  static final int CALL_STATIC = 1;
  static final int NEW_ACTOR = 2;
  static final int CALL_METHOD = 3;
  static final int DROP_ACTOR = 4;

  private final OutputStream out;
  private final Map<Long, Object> instances = new ConcurrentHashMap<>();
  private final AtomicLong nextInstance = new AtomicLong(1);
  private final ExecutorService threads = Executors.newCachedThreadPool(r -> {
    Thread t = new Thread(r, "solray-java-call");
    t.setDaemon(true);
    return t;
  });

  private JavaExecutor(OutputStream out) {
    this.out = out;
  }

  public static void main(String[] args) throws IOException {
    OutputStream frames = new BufferedOutputStream(new FileOutputStream(FileDescriptor.out), 1 << 16);
    System.setOut(System.err);
    DataInputStream in = new DataInputStream(new BufferedInputStream(System.in, 1 << 16));
    new JavaExecutor(frames).serve(in);
    System.exit(0); // stdin closed: the worker is gone; daemon threads end with us
  }

  private void serve(DataInputStream in) throws IOException {
    while (true) {
      Frames.Frame f = Frames.read(in);
      if (f == null) {
        return;
      }
      threads.execute(() -> answer(f));
    }
  }

  private void answer(Frames.Frame f) {
    Map<String, Object> body = new LinkedHashMap<>();
    List<byte[]> buffers = new ArrayList<>();
    try {
      Object result = run(f);
      byte[] value;
      try {
        value = Msgpack.pack(result);
      } catch (IllegalArgumentException e) {
        throw new IllegalArgumentException("the result cannot cross to the caller: " + e.getMessage(), e);
      }
      body.put("status", "ok");
      buffers.add(value);
    } catch (Throwable t) {
      Throwable cause = t instanceof InvocationTargetException ite && ite.getCause() != null ? ite.getCause() : t;
      body.put("status", "error");
      body.put("error", Errors.record(cause));
    }
    try {
      Frames.write(out, Frames.REPLY, f.requestId(), body, buffers);
    } catch (IOException e) {
      System.exit(0); // the worker stopped reading: it is gone
    }
  }

  private Object run(Frames.Frame f) throws Exception {
    Map<?, ?> body = (Map<?, ?>) f.body();
    List<Object> args = new ArrayList<>();
    for (byte[] b : f.buffers()) {
      args.add(Msgpack.unpack(b));
    }
    switch (f.type()) {
      case CALL_STATIC: {
        Class<?> c = load((String) body.get("class_name"));
        String name = (String) body.get("name");
        List<Executable> candidates = new ArrayList<>();
        for (Method m : c.getDeclaredMethods()) {
          if (m.getName().equals(name) && Modifier.isStatic(m.getModifiers()) && !m.isSynthetic()) {
            candidates.add(m);
          }
        }
        return invoke(null, candidates, args, "static method " + c.getName() + "." + name);
      }
      case NEW_ACTOR: {
        Class<?> c = load((String) body.get("class_name"));
        Object instance = invoke(null, Arrays.asList(c.getDeclaredConstructors()), args,
            "constructor of " + c.getName());
        long id = nextInstance.getAndIncrement();
        instances.put(id, instance);
        return id;
      }
      case CALL_METHOD: {
        Object instance = instance(body);
        String name = (String) body.get("name");
        List<Executable> candidates = new ArrayList<>();
        for (Method m : instance.getClass().getMethods()) {
          if (m.getName().equals(name) && !Modifier.isStatic(m.getModifiers())) {
            candidates.add(m);
          }
        }
        for (Method m : instance.getClass().getDeclaredMethods()) {
          if (m.getName().equals(name) && !Modifier.isStatic(m.getModifiers()) && !m.isSynthetic()
              && !candidates.contains(m)) {
            candidates.add(m);
          }
        }
        return invoke(instance, candidates, args, "method " + instance.getClass().getName() + "." + name);
      }
      case DROP_ACTOR:
        instances.remove(((Number) body.get("instance")).longValue());
        return null;
      default:
        throw new IllegalArgumentException("unknown request type " + f.type());
    }
  }

  private Object instance(Map<?, ?> body) {
    long id = ((Number) body.get("instance")).longValue();
    Object instance = instances.get(id);
    if (instance == null) {
      throw new IllegalStateException("no actor instance " + id + " in this JVM");
    }
    return instance;
  }

  private static Class<?> load(String name) throws ClassNotFoundException {
    try {
      return Class.forName(name, true, ClassLoader.getSystemClassLoader());
    } catch (ClassNotFoundException e) {
      throw new ClassNotFoundException(name + " is not on the job's code search path ("
          + System.getProperty("java.class.path") + ")", e);
    }
  }

  /**
   * Call the first of the candidates (by name, in signature order, so the
   * choice is the same on every run) whose parameters take the arguments:
   * strictly first, then letting ints become floats.
   */
  private static Object invoke(Object target, List<? extends Executable> found, List<Object> args, String what)
      throws Exception {
    List<Executable> candidates = new ArrayList<>();
    for (Executable e : found) {
      if (e.getParameterCount() == args.size()) {
        candidates.add(e);
      }
    }
    candidates.sort(Comparator.comparing(Executable::toGenericString));
    for (boolean lenient : new boolean[] {false, true}) {
      for (Executable e : candidates) {
        Object[] converted = convertAll(args, e.getGenericParameterTypes(), lenient);
        if (converted == null) {
          continue;
        }
        e.trySetAccessible();
        if (e instanceof Method m) {
          return m.invoke(target, converted);
        }
        return ((Constructor<?>) e).newInstance(converted);
      }
    }
    List<String> types = new ArrayList<>();
    for (Object a : args) {
      types.add(Conversions.describe(a));
    }
    if (found.isEmpty()) {
      throw new NoSuchMethodException("no " + what);
    }
    throw new NoSuchMethodException("no " + what + " takes " + args.size() + " argument(s) of types "
        + types + "; there are: " + found.stream().map(Executable::toGenericString).toList());
  }

  private static Object[] convertAll(List<Object> args, Type[] types, boolean lenient) {
    Object[] out = new Object[args.size()];
    for (int i = 0; i < out.length; i++) {
      Object c = Conversions.convert(args.get(i), types[i], lenient);
      if (c == Conversions.NO_MATCH) {
        return null;
      }
      out[i] = c;
    }
    return out;
  }
}
