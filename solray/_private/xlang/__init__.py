"""Cross-language calls (issue 16; docs/protocol.md is the user's account).

Foreign drivers (Java, C++) are thin clients of a proxy driver on the head,
and foreign tasks (Java) run in a JVM that a Python worker starts; both speak
the "xlang value" format at their edge, while stored objects stay in
solray's Python format. One module per job:

    values.py         a Python value <-> one msgpack document (typed arrays
                      as numpy)
    errors.py         a solray exception -> the error record foreign peers
                      read, and a JVM's error record -> the exception Python
                      raises
    foreign_driver.py the proxy's side of a foreign driver (messages 210-219)
    jvm.py            a Python worker's JVM child: started on demand, one per
                      classpath, for the worker's life
    java_calls.py     what Java functions and actors are on the Python side:
                      a remote function and an actor class whose bodies call
                      the worker's JVM
"""
