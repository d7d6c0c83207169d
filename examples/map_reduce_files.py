"""Map-reduce over a folder of text files: word counts with tasks.

The program writes a small folder of text files itself (in a temporary
directory), then counts words the map-reduce way:

- map: one task per file reads it and splits its word counts into
  NUM_PARTITIONS partitions by a stable hash of the word (num_returns gives
  one ref per partition, so each partition can go to a different reducer);
- reduce: one task per partition merges that partition of every file;
- the driver joins the reducers' disjoint results and checks them against a
  plain single-process Python count.

Tasks read the files by path, which works on one machine; on a cluster of
several, the folder would be on storage every node sees.

Run:  solray run examples/map_reduce_files.py
      (on Ray itself: python examples/map_reduce_files.py)
"""

import collections
import os
import random
import re
import tempfile
import zlib

import ray

NUM_FILES = 8
NUM_PARTITIONS = 3
VOCABULARY = (
    "the a of and to in ray task actor object store ref get put wait remote "
    "worker node cluster map reduce shuffle partition file word count"
).split()


def write_corpus(folder):
    """NUM_FILES files of made-up sentences; the same every run."""
    paths = []
    for i in range(NUM_FILES):
        rng = random.Random(i)
        lines = []
        for _ in range(200):
            words = rng.choices(VOCABULARY, k=rng.randint(3, 12))
            lines.append(" ".join(words).capitalize() + ".")
        path = os.path.join(folder, f"part-{i:02d}.txt")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def words_of(text):
    return re.findall(r"[a-z]+", text.lower())


def partition_of(word):
    # Not hash(word): string hashes differ between processes.
    return zlib.crc32(word.encode()) % NUM_PARTITIONS


@ray.remote(num_returns=NUM_PARTITIONS)
def map_file(path):
    partitions = [collections.Counter() for _ in range(NUM_PARTITIONS)]
    with open(path) as f:
        for word in words_of(f.read()):
            partitions[partition_of(word)][word] += 1
    return partitions


@ray.remote
def reduce_partition(*counts):
    total = collections.Counter()
    for count in counts:
        total.update(count)
    return total


def plain_python_count(paths):
    total = collections.Counter()
    for path in paths:
        with open(path) as f:
            total.update(words_of(f.read()))
    return total


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        paths = write_corpus(folder)
        ray.init(num_cpus=2)

        # One list of NUM_PARTITIONS refs per file.
        mapped = [map_file.remote(path) for path in paths]
        # Reducer i gets partition i of every file, as top-level arguments.
        reduced = [
            reduce_partition.remote(*[partitions[i] for partitions in mapped])
            for i in range(NUM_PARTITIONS)
        ]
        partitions = ray.get(reduced)
        word_counts = collections.Counter()
        for partition in partitions:
            word_counts.update(partition)

        expected = plain_python_count(paths)
        ray.shutdown()

    disjoint = sum(len(p) for p in partitions) == len(word_counts)
    print(f"{NUM_FILES} files, {sum(word_counts.values())} words, {len(word_counts)} distinct")
    print("most common:", word_counts.most_common(3))
    print(f"{NUM_PARTITIONS} reducers, each word counted by exactly one: {disjoint}")
    print("map-reduce matches a plain Python count:", word_counts == expected)
    assert disjoint and word_counts == expected
    print("map_reduce_files: all checks passed")
