"""Tasks and an actor together: estimating pi by Monte Carlo, with progress.

The complete example of Ray's "Tasks" page, as a program: sampling tasks
report their progress to a ProgressActor whose handle they were passed, the
driver polls the actor until every sample is counted, then adds up the
tasks' results. Sample counts are shrunk from the page's 100 million so it
runs in a few seconds.

Run:  solray run examples/monte_carlo_pi.py
      (on Ray itself: python examples/monte_carlo_pi.py)
"""

import math
import random
import time

import ray

ray.init(num_cpus=2)


# Define a Ray actor that tracks progress
@ray.remote
class ProgressActor:
    def __init__(self, total_num_samples: int):
        self.total_num_samples = total_num_samples
        self.num_samples_completed_per_task = {}

    def report_progress(self, task_id: int, num_samples_completed: int) -> None:
        self.num_samples_completed_per_task[task_id] = num_samples_completed

    def get_progress(self) -> float:
        return sum(self.num_samples_completed_per_task.values()) / self.total_num_samples


# Define a Ray task that does the sampling
@ray.remote
def sampling_task(num_samples: int, task_id: int, progress_actor: ray.actor.ActorHandle) -> int:
    num_inside = 0
    for i in range(num_samples):
        x, y = random.uniform(-1, 1), random.uniform(-1, 1)
        if math.hypot(x, y) <= 1:
            num_inside += 1

        # Report progress every 20 thousand samples (the page: every million).
        if (i + 1) % 20_000 == 0:
            progress_actor.report_progress.remote(task_id, i + 1)

    # Report the final progress.
    progress_actor.report_progress.remote(task_id, num_samples)
    return num_inside


# Configuration
NUM_SAMPLING_TASKS = 10
NUM_SAMPLES_PER_TASK = 100_000
TOTAL_NUM_SAMPLES = NUM_SAMPLING_TASKS * NUM_SAMPLES_PER_TASK

# Create the progress actor
progress_actor = ProgressActor.remote(TOTAL_NUM_SAMPLES)

# Create and execute all sampling tasks in parallel
results = [
    sampling_task.remote(NUM_SAMPLES_PER_TASK, i, progress_actor) for i in range(NUM_SAMPLING_TASKS)
]

# Query progress periodically
while True:
    progress = ray.get(progress_actor.get_progress.remote())
    print(f"Progress: {int(progress * 100)}%")

    if progress == 1:
        break

    time.sleep(0.2)

# Get all the sampling tasks results and calculate π
total_num_inside = sum(ray.get(results))
pi = (total_num_inside * 4) / TOTAL_NUM_SAMPLES
print(f"Estimated value of π is: {pi}")
# A million samples put the estimate within about 0.002 of π; 0.02 is far out.
print("within 0.02 of math.pi:", abs(pi - math.pi) < 0.02)

ray.shutdown()
print("monte_carlo_pi: all checks passed")
