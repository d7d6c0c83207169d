"""Remote objects: put/get/wait, refs passed top-level and nested, closure capture.

Ray's "Objects" page, as a program: put a value and get it back, get several
refs at once, a get that times out, ray.wait for the first ready of several,
object refs passed to a task as top-level arguments (the task sees values) and
nested in a list (the task sees refs and gets them itself), the same for an
actor's constructor and methods, refs captured by a task's closure, and refs
nested in other objects.

Run:  solray run examples/objects.py
      (on Ray itself: python examples/objects.py)
"""

import time

import ray
from ray.exceptions import GetTimeoutError

ray.init(num_cpus=2)

# Put an object in Ray's object store.
y = 1
object_ref = ray.put(y)

# Get the value of one object ref.
obj_ref = ray.put(1)
assert ray.get(obj_ref) == 1

# Get the values of multiple object refs in parallel.
assert ray.get([ray.put(i) for i in range(3)]) == [0, 1, 2]
print("put/get:", ray.get(object_ref), ray.get([ray.put(i) for i in range(3)]))


# You can also set a timeout to return early from a ``get``
# that's blocking for too long.
@ray.remote
def long_running_function():
    time.sleep(8)


obj_ref = long_running_function.remote()
try:
    ray.get(obj_ref, timeout=0.5)  # the page waits 4 s; half a second shows the same
except GetTimeoutError:
    print("`get` timed out.")
ray.cancel(obj_ref, force=True)  # the page lets it run; nothing here needs its result


# ray.wait: the first of several to be ready, without blocking on the rest.
@ray.remote
def sleep_then_return(seconds, value):
    time.sleep(seconds)
    return value


refs = [sleep_then_return.remote(30, "slow"), sleep_then_return.remote(0, "fast")]
ready, not_ready = ray.wait(refs, num_returns=1)
print("wait: first ready is", ray.get(ready[0]), "with", len(not_ready), "still running")
ray.cancel(not_ready[0], force=True)


# Passing an object as a top-level argument: Ray de-references it.
@ray.remote
def echo(a: int, b: int, c: int):
    """This function prints its input values to stdout."""
    print(a, b, c)
    return a, b, c  # returned as well, so the driver can show what the task saw


# Passing the literal values (1, 2, 3) to `echo`.
echo.remote(1, 2, 3)
# -> prints "1 2 3"

# Put the values (1, 2, 3) into Ray's object store.
a, b, c = ray.put(1), ray.put(2), ray.put(3)

# Passing an object as a top-level argument to `echo`. Ray will de-reference top-level
# arguments, so `echo` will see the literal values (1, 2, 3) in this case as well.
print("top-level refs, the task saw:", ray.get(echo.remote(a, b, c)))


# Passing an object as a nested argument: Ray does not de-reference it.
@ray.remote
def echo_and_get(x_list):  # List[ObjectRef]
    """This function prints its input values to stdout."""
    print("args:", x_list)
    print("values:", ray.get(x_list))
    return [type(x).__name__ for x in x_list], ray.get(x_list)


# Passing an object as a nested argument to `echo_and_get`. Ray does not
# de-reference nested args, so `echo_and_get` sees the references.
kinds, values = ray.get(echo_and_get.remote([a, b, c]))
print("nested refs, the task saw:", kinds, "and got", values)


# The top-level vs not top-level passing convention also applies to actor
# constructors and actor method calls.
def describe(arg):
    """What the callee got: the value's type, or [ObjectRef] for a list of refs."""
    if isinstance(arg, list):
        return f"[{type(arg[0]).__name__}]"
    return type(arg).__name__


@ray.remote
class Actor:
    def __init__(self, arg):
        self.constructed_with = describe(arg)

    def constructor_saw(self):
        return self.constructed_with

    def method(self, arg):
        return describe(arg)


obj = ray.put(7)
by_value = Actor.remote(obj)  # by-value
by_reference = Actor.remote([obj])  # by-reference
print(
    "actor constructor saw:",
    ray.get(by_value.constructor_saw.remote()),
    "then",
    ray.get(by_reference.constructor_saw.remote()),
)
print(
    "actor method saw:",
    ray.get(by_value.method.remote(obj)),  # by-value
    "then",
    ray.get(by_value.method.remote([obj])),  # by-reference
)


# Closure capture: a task that closes over refs pins them for the job.
@ray.remote
def print_via_capture():
    """This function prints the values of (a, b, c) to stdout."""
    print(ray.get([a, b, c]))
    return ray.get([a, b, c])


# Passing object references via closure-capture. Inside the `print_via_capture`
# function, the global object refs (a, b, c) can be retrieved and printed.
print("closure capture:", ray.get(print_via_capture.remote()))

# Objects can be nested within each other. Ray will keep the inner object
# alive via reference counting until all outer object references are deleted.
object_ref_2 = ray.put([object_ref])
del object_ref
inner = ray.get(object_ref_2)[0]
print("nested object: outer holds a ref whose value is", ray.get(inner))

ray.shutdown()
print("objects: all checks passed")
