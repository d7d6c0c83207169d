"""A parameter server: one actor holds the weights, worker tasks push gradients.

The pattern of Ray's parameter-server example, written fresh with numpy (a
linear regression instead of a neural network). The ParameterServer actor
owns the model's weights; each worker has its own shard of the data, put in
the object store once.

- Synchronous: every step, each worker computes a gradient on the same
  weights; the server averages them and applies the step. The driver only
  passes refs around: the server's next weights are computed from the
  gradients' refs without the driver ever fetching a gradient.
- Asynchronous: each worker task loops by itself, pulling the current
  weights and pushing its gradient to the server as soon as it has one;
  the server applies each as it comes, so a worker's gradient may be from
  weights a step or two old. It converges all the same.

The data is generated from known weights, so the program can check that both
variants found them.

Run:  solray run examples/parameter_server.py
      (on Ray itself: python examples/parameter_server.py)
"""

import numpy as np
import ray

NUM_FEATURES = 8
NUM_WORKERS = 4
SAMPLES_PER_WORKER = 500
LEARNING_RATE = 0.1

TRUE_WEIGHTS = np.random.default_rng(0).normal(size=NUM_FEATURES)


def make_shard(seed):
    """One worker's data: inputs and the targets the true weights give them."""
    x = np.random.default_rng(seed).normal(size=(SAMPLES_PER_WORKER, NUM_FEATURES))
    return x, x @ TRUE_WEIGHTS


def gradient(weights, shard):
    """Of the mean squared error on one shard."""
    x, y = shard
    return 2 * x.T @ (x @ weights - y) / len(y)


@ray.remote
class ParameterServer:
    def __init__(self, learning_rate):
        self.weights = np.zeros(NUM_FEATURES)
        self.learning_rate = learning_rate
        self.updates = 0

    def apply_gradients(self, *gradients):
        self.weights -= self.learning_rate * np.mean(gradients, axis=0)
        self.updates += 1
        return self.weights

    def get_weights(self):
        return self.weights

    def num_updates(self):
        return self.updates


@ray.remote
def compute_gradient(weights, shard):
    return gradient(weights, shard)


@ray.remote
def async_worker(server, shard, steps):
    """Pull the weights, push a gradient, as fast as it can, `steps` times."""
    for _ in range(steps):
        weights = ray.get(server.get_weights.remote())
        ray.get(server.apply_gradients.remote(gradient(weights, shard)))
    return steps


def error(weights):
    return float(np.max(np.abs(weights - TRUE_WEIGHTS)))


if __name__ == "__main__":
    ray.init(num_cpus=2)
    shards = [ray.put(make_shard(seed)) for seed in range(1, NUM_WORKERS + 1)]

    # Synchronous: a barrier every step (the server waits for all gradients).
    server = ParameterServer.remote(LEARNING_RATE)
    weights = server.get_weights.remote()
    for _ in range(60):
        gradients = [compute_gradient.remote(weights, shard) for shard in shards]
        weights = server.apply_gradients.remote(*gradients)
    sync_weights = ray.get(weights)
    sync_updates = ray.get(server.num_updates.remote())
    print(f"synchronous: max error {error(sync_weights):.2e}")
    print(
        f"synchronous: {sync_updates} updates, found the true weights: {error(sync_weights) < 1e-3}"
    )

    # Asynchronous: workers push whenever they are ready, with no barrier.
    server = ParameterServer.remote(LEARNING_RATE)
    steps = 60
    done = ray.get([async_worker.remote(server, shard, steps) for shard in shards])
    async_weights = ray.get(server.get_weights.remote())
    async_updates = ray.get(server.num_updates.remote())
    assert async_updates == sum(done)
    print(f"asynchronous: max error {error(async_weights):.2e}")
    print(
        f"asynchronous: {async_updates} updates, found the true weights: "
        f"{error(async_weights) < 1e-3}"
    )

    ray.shutdown()
    print("parameter_server: all checks passed")
