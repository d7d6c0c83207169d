package io.solray.runtime;

import io.ray.api.ActorHandle;
import io.ray.api.BaseActorHandle;
import io.ray.api.ObjectRef;
import io.ray.api.PyActorHandle;
import io.ray.api.WaitResult;
import io.ray.api.exception.RayException;
import io.ray.api.exception.RayTimeoutException;
import io.ray.api.function.PyActorClass;
import io.ray.api.function.PyActorMethod;
import io.ray.api.function.PyFunction;
import io.ray.api.function.RayFunc;
import java.lang.reflect.Type;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * The driver behind io.ray.api.Ray: one connection to the cluster's client
 * server, whose proxy driver owns every object and actor this JVM makes
 * (XLANG_SPEC.md, "Messages"). Values cross as cross-language values
 * (Msgpack), read back as the Java type the ref carries (Conversions).
 */
public final class SolrayRuntime {
  static final int XLANG_CONNECT = 210;
  static final int XLANG_PUT = 211;
  static final int XLANG_GET = 212;
  static final int XLANG_WAIT = 213;
  static final int XLANG_SUBMIT_TASK = 214;
  static final int XLANG_CREATE_ACTOR = 215;
  static final int XLANG_CALL_ACTOR = 216;
  static final int XLANG_RELEASE = 217;
  static final int XLANG_GET_ACTOR = 218;
  static final int XLANG_KILL_ACTOR = 219;

  private static SolrayRuntime current; // guarded by SolrayRuntime.class

  private final ClientConnection connection;
  private final HandleTracker tracker;
  private final String jobId;
  private final String namespace;

  private SolrayRuntime(DriverConfig config) {
    connection = new ClientConnection(config.host(), config.port(), config.token());
    try {
      Map<String, Object> body = new LinkedHashMap<>();
      body.put("language", "java");
      body.put("namespace", config.namespace());
      body.put("code_search_path", config.codeSearchPath());
      body.put("jvm_options", config.jvmOptions());
      Map<?, ?> reply = (Map<?, ?>) connection.request(XLANG_CONNECT, body, List.of()).body();
      jobId = String.valueOf(reply.get("job_id"));
      namespace = String.valueOf(reply.get("namespace"));
    } catch (RuntimeException e) {
      connection.close();
      throw e;
    }
    tracker = new HandleTracker(b -> connection.sendOneWay(XLANG_RELEASE, b));
  }

  public static synchronized void init() {
    if (current == null) {
      current = new SolrayRuntime(DriverConfig.fromEnvironment());
    }
  }

  public static synchronized void shutdown() {
    if (current != null) {
      current.tracker.close();
      current.connection.close();
      current = null;
    }
  }

  public static synchronized boolean isInitialized() {
    return current != null;
  }

  public static synchronized SolrayRuntime get() {
    if (current == null) {
      throw new RayException("Ray is not initialized: call Ray.init() first");
    }
    return current;
  }

  /** The job this driver is (hex), as the cluster named it. */
  public String getJobId() {
    return jobId;
  }

  public String getNamespace() {
    return namespace;
  }

  // -- objects -------------------------------------------------------------

  public <T> ObjectRef<T> put(T obj) {
    byte[] value = encode(obj, "Ray.put");
    Map<?, ?> reply = (Map<?, ?>) connection.request(XLANG_PUT, new HashMap<>(), List.of(value)).body();
    return newRef((byte[]) reply.get("id"), typeOf(obj));
  }

  /** The type a put value reads back as: its class, or the interface for lists and maps. */
  private static Type typeOf(Object obj) {
    if (obj == null) {
      return Object.class;
    }
    if (obj instanceof List) {
      return List.class;
    }
    return obj instanceof Map ? Map.class : obj.getClass();
  }

  @SuppressWarnings("unchecked")
  public <T> List<T> get(List<ObjectRef<T>> refs, long timeoutMs) {
    List<ObjectRefImpl<T>> impls = new ArrayList<>();
    List<byte[]> ids = new ArrayList<>();
    for (ObjectRef<T> ref : refs) {
      ObjectRefImpl<T> impl = own(ref);
      impls.add(impl);
      ids.add(impl.id);
    }
    if (ids.isEmpty()) {
      return new ArrayList<>();
    }
    Map<String, Object> body = new LinkedHashMap<>();
    body.put("ids", ids);
    body.put("timeout_ms", timeoutMs < 0 ? null : timeoutMs);
    ClientConnection.Reply reply = connection.request(XLANG_GET, body, List.of());
    Map<?, ?> answer = (Map<?, ?>) reply.body();
    if (Boolean.TRUE.equals(answer.get("timed_out"))) {
      throw new RayTimeoutException("Get timed out: " + ids.size() + " object(s) were not all ready"
          + " after " + timeoutMs + " ms");
    }
    List<?> results = (List<?>) answer.get("results");
    List<T> values = new ArrayList<>(results.size());
    int buffer = 0;
    for (int i = 0; i < results.size(); i++) {
      Map<?, ?> result = (Map<?, ?>) results.get(i);
      if (!"ok".equals(result.get("status"))) {
        throw Errors.toException((Map<?, ?>) result.get("error"));
      }
      Object decoded = Msgpack.unpack(reply.buffers().get(buffer++));
      Object value = Conversions.convert(decoded, impls.get(i).type, true);
      if (value == Conversions.NO_MATCH) {
        throw new RayException("the value of " + impls.get(i) + " (a " + Conversions.describe(decoded)
            + ") cannot be read as " + impls.get(i).type.getTypeName());
      }
      values.add((T) value);
    }
    return values;
  }

  public <T> WaitResult<T> wait(List<ObjectRef<T>> refs, int numReturns, int timeoutMs, boolean fetchLocal) {
    if (refs.isEmpty()) {
      return new WaitResult<>(new ArrayList<>(), new ArrayList<>());
    }
    if (numReturns < 1 || numReturns > refs.size()) {
      throw new IllegalArgumentException("Ray.wait: numReturns must be between 1 and the number of"
          + " refs (" + refs.size() + "), not " + numReturns);
    }
    Map<String, ObjectRef<T>> byId = new HashMap<>();
    List<byte[]> ids = new ArrayList<>();
    for (ObjectRef<T> ref : refs) {
      ObjectRefImpl<T> impl = own(ref);
      ids.add(impl.id);
      byId.putIfAbsent(HexFormat.of().formatHex(impl.id), ref);
    }
    Map<String, Object> body = new LinkedHashMap<>();
    body.put("ids", ids);
    body.put("num_returns", numReturns);
    body.put("timeout_ms", timeoutMs < 0 || timeoutMs == Integer.MAX_VALUE ? null : timeoutMs);
    body.put("fetch_local", fetchLocal);
    Map<?, ?> reply = (Map<?, ?>) connection.request(XLANG_WAIT, body, List.of()).body();
    return new WaitResult<>(
        pick(byId, (List<?>) reply.get("ready")), pick(byId, (List<?>) reply.get("not_ready")));
  }

  private static <T> List<ObjectRef<T>> pick(Map<String, ObjectRef<T>> byId, List<?> ids) {
    List<ObjectRef<T>> out = new ArrayList<>();
    for (Object id : ids) {
      out.add(byId.get(HexFormat.of().formatHex((byte[]) id)));
    }
    return out;
  }

  // -- tasks and actors ----------------------------------------------------

  public <R> ObjectRef<R> submitJavaTask(RayFunc func, Object[] args, Map<String, Object> options) {
    FunctionRef f = FunctionRef.of(func);
    if (!f.isStatic()) {
      throw new IllegalArgumentException("Ray.task takes a static method (MyClass::staticMethod); "
          + f.describe() + " is not one: call an actor's methods with actorHandle.task(...)");
    }
    Map<String, Object> function = new LinkedHashMap<>();
    function.put("language", "java");
    function.put("class_name", f.className());
    function.put("name", f.methodName());
    return submit(function, args, options, f.returnType(), f.describe());
  }

  public <R> ObjectRef<R> submitPythonTask(PyFunction<R> func, Object[] args, Map<String, Object> options) {
    Map<String, Object> function = new LinkedHashMap<>();
    function.put("language", "python");
    function.put("module", func.moduleName);
    function.put("name", func.functionName);
    return submit(function, args, options, func.returnType, func.moduleName + "." + func.functionName);
  }

  private <R> ObjectRef<R> submit(
      Map<String, Object> function, Object[] args, Map<String, Object> options, Type returnType, String what) {
    List<byte[]> buffers = new ArrayList<>();
    Map<String, Object> body = new LinkedHashMap<>();
    body.put("function", function);
    body.put("args", encodeArgs(args, buffers, what));
    body.put("options", options);
    Map<?, ?> reply = (Map<?, ?>) connection.request(XLANG_SUBMIT_TASK, body, buffers).body();
    return newRef((byte[]) ((List<?>) reply.get("ids")).get(0), returnType);
  }

  public <A> ActorHandle<A> createJavaActor(RayFunc constructor, Object[] args, Map<String, Object> options) {
    FunctionRef f = FunctionRef.of(constructor);
    if (!f.isConstructor()) {
      throw new IllegalArgumentException("Ray.actor takes a constructor reference (MyActor::new); "
          + f.describe() + " is not one");
    }
    Map<String, Object> actorClass = new LinkedHashMap<>();
    actorClass.put("language", "java");
    actorClass.put("class_name", f.className());
    byte[] id = createActor(actorClass, args, options, f.describe());
    JavaActorHandle<A> handle = new JavaActorHandle<>(this, id, f.className());
    tracker.track(handle, id, true);
    return handle;
  }

  public PyActorHandle createPythonActor(PyActorClass cls, Object[] args, Map<String, Object> options) {
    Map<String, Object> actorClass = new LinkedHashMap<>();
    actorClass.put("language", "python");
    actorClass.put("module", cls.moduleName);
    actorClass.put("name", cls.className);
    byte[] id = createActor(actorClass, args, options, cls.moduleName + "." + cls.className);
    PythonActorHandle handle = new PythonActorHandle(this, id, cls.moduleName, cls.className);
    tracker.track(handle, id, true);
    return handle;
  }

  private byte[] createActor(Map<String, Object> actorClass, Object[] args, Map<String, Object> options, String what) {
    List<byte[]> buffers = new ArrayList<>();
    Map<String, Object> body = new LinkedHashMap<>();
    body.put("class", actorClass);
    body.put("args", encodeArgs(args, buffers, what));
    body.put("options", options);
    Map<?, ?> reply = (Map<?, ?>) connection.request(XLANG_CREATE_ACTOR, body, buffers).body();
    return (byte[]) reply.get("actor_id");
  }

  public <R> ObjectRef<R> callJavaActor(ActorHandle<?> actor, RayFunc func, Object[] args) {
    FunctionRef f = FunctionRef.of(func);
    if (f.isStatic() || f.isConstructor()) {
      throw new IllegalArgumentException("actorHandle.task takes an instance method of the actor"
          + " (MyActor::method); " + f.describe() + " is not one");
    }
    if (!(actor instanceof JavaActorHandle<?> h) || h.runtime != this) {
      throw new RayException("this actor handle belongs to a Ray session that has been shut down");
    }
    return callActor(h.id, f.methodName(), args, f.returnType(), f.describe());
  }

  public <R> ObjectRef<R> callPythonActor(PyActorHandle actor, PyActorMethod<R> method, Object[] args) {
    if (!(actor instanceof PythonActorHandle h) || h.runtime != this) {
      throw new RayException("this actor handle belongs to a Ray session that has been shut down");
    }
    return callActor(h.id, method.methodName, args, method.returnType, h.getClassName() + "." + method.methodName);
  }

  private <R> ObjectRef<R> callActor(byte[] actorId, String method, Object[] args, Type returnType, String what) {
    List<byte[]> buffers = new ArrayList<>();
    Map<String, Object> body = new LinkedHashMap<>();
    body.put("actor_id", actorId);
    body.put("method", method);
    body.put("args", encodeArgs(args, buffers, what));
    body.put("options", Map.of("num_returns", 1));
    Map<?, ?> reply = (Map<?, ?>) connection.request(XLANG_CALL_ACTOR, body, buffers).body();
    return newRef((byte[]) ((List<?>) reply.get("ids")).get(0), returnType);
  }

  @SuppressWarnings("unchecked")
  public <T extends BaseActorHandle> Optional<T> getActor(String name, String namespace) {
    Map<String, Object> body = new LinkedHashMap<>();
    body.put("name", name);
    body.put("namespace", namespace);
    Map<?, ?> reply;
    try {
      reply = (Map<?, ?>) connection.request(XLANG_GET_ACTOR, body, List.of()).body();
    } catch (ClientConnection.RemoteError e) {
      if ("ValueError".equals(e.typeName())) {
        return Optional.empty(); // no such actor
      }
      throw e;
    }
    byte[] id = (byte[]) reply.get("actor_id");
    Map<?, ?> cls = (Map<?, ?>) reply.get("class");
    BaseActorHandle handle;
    if ("python".equals(cls.get("language"))) {
      handle = new PythonActorHandle(this, id, (String) cls.get("module"), (String) cls.get("name"));
    } else {
      handle = new JavaActorHandle<>(this, id, (String) cls.get("class_name"));
    }
    tracker.track(handle, id, true);
    return Optional.of((T) handle);
  }

  void killActor(byte[] actorId, boolean noRestart) {
    if (this != currentOrNull()) {
      throw new RayException("this actor handle belongs to a Ray session that has been shut down");
    }
    Map<String, Object> body = new LinkedHashMap<>();
    body.put("actor_id", actorId);
    body.put("no_restart", noRestart);
    connection.request(XLANG_KILL_ACTOR, body, List.of());
  }

  // -- helpers -------------------------------------------------------------

  private static synchronized SolrayRuntime currentOrNull() {
    return current;
  }

  private <T> ObjectRef<T> newRef(byte[] id, Type type) {
    ObjectRefImpl<T> ref = new ObjectRefImpl<>(this, id, type);
    tracker.track(ref, id, false);
    return ref;
  }

  private <T> ObjectRefImpl<T> own(ObjectRef<T> ref) {
    if (!(ref instanceof ObjectRefImpl<T> impl) || impl.runtime != this) {
      throw new RayException(ref + " belongs to a Ray session that has been shut down");
    }
    return impl;
  }

  /** ARGs: refs by id (resolved before the call), values as buffers of this frame. */
  private List<Object> encodeArgs(Object[] args, List<byte[]> buffers, String what) {
    List<Object> out = new ArrayList<>();
    for (int i = 0; i < args.length; i++) {
      if (args[i] instanceof ObjectRef<?> ref) {
        out.add(Map.of("ref", own(ref).id));
      } else {
        out.add(Map.of("value", buffers.size()));
        buffers.add(encode(args[i], "argument " + (i + 1) + " of " + what));
      }
    }
    return out;
  }

  private static byte[] encode(Object value, String what) {
    try {
      return Msgpack.pack(value);
    } catch (IllegalArgumentException e) {
      throw new IllegalArgumentException(what + ": " + e.getMessage(), e);
    }
  }
}
