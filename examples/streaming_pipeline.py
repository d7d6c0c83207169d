"""A streaming pipeline: a generator task streams batches, a stage transforms
each one as it arrives, a consumer actor takes the results.

- produce: a streaming generator task yielding NUM_BATCHES numpy batches;
- transform: one task per batch, submitted by the driver the moment the
  producer's ref for that batch arrives (the producer is still running);
- Consumer: an actor that adds up the transformed batches in order.

Every step is written to an EventLog actor with a timestamp, printed at the
end. The proof that consumption starts before production ends does not rest
on the timestamps: before yielding its last batch the producer waits until
the consumer has logged batch 0. Were batches only delivered when the
producer task finished, that wait could never end and the program would fail
with GetTimeoutError; it prints "True" instead, on every run.

Run:  solray run examples/streaming_pipeline.py
      (on Ray itself: python examples/streaming_pipeline.py)
"""

import asyncio
import time

import numpy as np
import ray

NUM_BATCHES = 6
BATCH_SIZE = 1000


@ray.remote
class EventLog:
    """Events in the order they happened, and a way to wait for one."""

    def __init__(self):
        self.events = []
        self.changed = asyncio.Condition()

    async def record(self, event):
        self.events.append((time.monotonic(), event))
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, event):
        async with self.changed:
            await self.changed.wait_for(lambda: event in [e for _, e in self.events])

    async def get_events(self):
        return self.events


@ray.remote
def produce(num_batches, log):
    for i in range(num_batches):
        if i == num_batches - 1:
            # Only streaming lets this return: batch 0 must have gone all the
            # way through the pipeline while this task is still running.
            ray.get(log.wait_for.remote("consumed batch 0"), timeout=60)
        time.sleep(0.1)  # stands for the work of making a batch
        ray.get(log.record.remote(f"produced batch {i}"))
        yield np.arange(i * BATCH_SIZE, (i + 1) * BATCH_SIZE)


@ray.remote
def transform(batch):
    return batch * batch


@ray.remote
class Consumer:
    def __init__(self, log):
        self.log = log
        self.total = 0

    def consume(self, i, batch):
        self.total += int(batch.sum())
        ray.get(self.log.record.remote(f"consumed batch {i}"))

    def result(self):
        return self.total


if __name__ == "__main__":
    ray.init(num_cpus=2)
    start = time.monotonic()
    log = EventLog.remote()
    consumer = Consumer.remote(log)

    consumed = []
    for i, batch_ref in enumerate(produce.remote(NUM_BATCHES, log)):
        # This runs as each batch arrives, while the producer goes on.
        consumed.append(consumer.consume.remote(i, transform.remote(batch_ref)))
    ray.get(consumed)

    events = ray.get(log.get_events.remote())
    for at, event in events:
        print(f"  {at - start:6.3f}s  {event}")
    order = [event for _, event in events]
    first_consumed = order.index("consumed batch 0")
    last_produced = order.index(f"produced batch {NUM_BATCHES - 1}")
    streamed = first_consumed < last_produced
    print(f"batch 0 consumed before batch {NUM_BATCHES - 1} was produced: {streamed}")

    total = ray.get(consumer.result.remote())
    expected = int((np.arange(NUM_BATCHES * BATCH_SIZE) ** 2).sum())
    print(f"sum of squares {total}, as computed in one process: {total == expected}")
    assert streamed and total == expected
    ray.shutdown()
    print("streaming_pipeline: all checks passed")
