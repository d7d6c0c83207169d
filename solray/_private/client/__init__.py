"""The thin client: `init("ray://HOST:PORT")` on a machine without a node.

Three parts, as Ray Client's "specific server" design:

    server.py         the client server `solray start --head` runs (port
                      10001 by default). It authenticates each connection
                      with the cluster token (transport.py's handshake), then
                      hands the socket to a new proxy process.
    proxy.py          one proxy driver per client connection, on the head: a
                      real driver of the cluster (as init(address=...)) that
                      runs the client's API calls and owns what they create.
                      It exits when the client's connection closes, however
                      that happens, so the cluster frees what it owned
                      (objects, non-detached actors); detached actors stay.
    client_worker.py  the client side: one connection to HOST:PORT and
                      nothing else (no shared memory, no session registry
                      beyond finding the token), and client-side refs.

How the public API reaches the proxy: in a client, `context.client` is set
and `context.core_worker` is None. The public functions (`get`, `put`,
`wait`, `cancel`, `kill`, `get_actor`, `nodes`, ..., `.remote()` of functions,
actor classes and methods) check `context.client` first and, if set, send
their own name and arguments (`ClientWorker.call`); the proxy calls the same
function with the same arguments (`proxy._api`) and sends back its result or
its exception (`wait` is answered as the positions of the ready items, so
the client returns its own objects). So argument checking, options and errors are those of a local
driver, and a new public function needs one line on each side.

Values both ways are pickled with out-of-band buffers (wire.py): a numpy
array's bytes travel as frame buffers, never through msgpack.
"""
