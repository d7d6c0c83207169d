"""Application metrics and progress bars, as Ray's observability pages show them.

The actor of Ray's "Adding Application-Level Metrics" page counts requests,
keeps a gauge and a latency histogram; the program then reads them back the
way Prometheus would, from the node's metrics endpoint. Tasks report their
progress with `ray.experimental.tqdm_ray.tqdm`, drawn on this driver.

Run:  solray run examples/metrics_and_progress.py
      (on Ray itself: python examples/metrics_and_progress.py; Ray reports
      metrics every 10 s, so the scrape below waits longer there)
"""

import time
import urllib.request

import ray
from ray.experimental.tqdm_ray import tqdm
from ray.util.metrics import Counter, Gauge, Histogram

ray.init(num_cpus=2)


@ray.remote
class MyActor:
    def __init__(self, name):
        self._curr_count = 0
        self.counter = Counter(
            "num_requests",
            description="Number of requests processed by the actor.",
            tag_keys=("actor_name",),
        )
        self.counter.set_default_tags({"actor_name": name})
        self.gauge = Gauge(
            "curr_count",
            description="Current count held by the actor. Goes up and down.",
            tag_keys=("actor_name",),
        )
        self.gauge.set_default_tags({"actor_name": name})
        self.histogram = Histogram(
            "request_latency",
            description="Latencies of requests in ms.",
            boundaries=[0.1, 1],
            tag_keys=("actor_name",),
        )
        self.histogram.set_default_tags({"actor_name": name})

    def process_request(self, num):
        start = time.time()
        self._curr_count += num
        self.counter.inc()
        self.gauge.set(self._curr_count)
        self.histogram.observe(1000 * (time.time() - start))
        return self._curr_count


@ray.remote
def crunch(n):
    total = 0
    for i in tqdm(range(n), desc="crunching"):
        total += i
    return total


actor = MyActor.remote("my_actor")
for i in range(5):
    ray.get(actor.process_request.remote(i + 1))
print("task results:", ray.get([crunch.remote(1000), crunch.remote(2000)]))

# Read the metrics back from this node's endpoint, as Prometheus would.
port = ray.nodes()[0]["MetricsExportPort"]


def scrape():
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
        samples = {}
        for line in response.read().decode().splitlines():
            if line and not line.startswith("#"):
                name_and_labels, value = line.rsplit(" ", 1)
                samples[name_and_labels.split("{")[0]] = float(value)
        return samples


deadline = time.time() + 60
while scrape().get("ray_num_requests_total") != 5 and time.time() < deadline:
    time.sleep(0.2)
samples = scrape()
print("num_requests counted by the actor:", samples.get("ray_num_requests_total"))
print("curr_count gauge:", samples.get("ray_curr_count"))
print("request_latency observations:", samples.get("ray_request_latency_count"))
assert samples.get("ray_num_requests_total") == 5
assert samples.get("ray_curr_count") == 15
assert samples.get("ray_request_latency_count") == 5
print("metrics_and_progress: all checks passed")
