#!/usr/bin/env bash
# Builds (and by default tests) solray's Java side OFFLINE: `mvn -o` with the
# plugins pom.xml pins, from the local Maven repository, and Debian's
# libmsgpack-java. Maven Central is never contacted, so a machine without
# those fails here at once, saying what is missing, instead of in Maven's
# resolver. Arguments go to Maven (default: package, which runs the tests:
# they start a cluster with SOLRAY_TEST_PYTHON's solray, else python3's).
#   java/build.sh                       build and test
#   java/build.sh package -DskipTests   build only
# Output: java/runtime/target/solray-java.jar (the API, the client, the JVM
# executor, MessagePack) and java/examples/target/solray-java-examples.jar.
set -euo pipefail
cd "$(dirname "$0")"

fail() { echo "java/build.sh: $*" >&2; exit 1; }

command -v javac >/dev/null || fail "no JDK (javac): install default-jdk-headless (Java 17 or newer)"
version=$(javac -version 2>&1 | sed -E 's/^javac ([0-9]+).*/\1/')
[ "$version" -ge 17 ] 2>/dev/null || fail "javac is version $version: Java 17 or newer is needed"
command -v mvn >/dev/null || fail "no Maven (mvn): install maven"
msgpack=/usr/share/java/msgpack-core.jar
[ -f "$msgpack" ] || fail "no $msgpack: install libmsgpack-java"

repo=${MAVEN_REPO_LOCAL:-$HOME/.m2/repository}
missing=()
while read -r artifact version; do
    ls "$repo/org/apache/maven/plugins/$artifact/$version/"*.jar >/dev/null 2>&1 \
        || missing+=("$artifact $version")
done < <(sed -nE 's|.*<artifactId>(maven-[a-z]+-plugin)</artifactId><version>([^<]+)</version>.*|\1 \2|p' pom.xml)
junit=$(sed -nE 's|.*<junit.jupiter.version>([^<]+)</junit.jupiter.version>.*|\1|p' pom.xml)
ls "$repo/org/junit/jupiter/junit-jupiter-engine/$junit/"*.jar >/dev/null 2>&1 \
    || missing+=("junit-jupiter $junit")
if [ ${#missing[@]} -gt 0 ]; then
    fail "the local Maven repository ($repo) lacks: ${missing[*]}. The build is offline (Maven" \
        "Central is not reachable): fill $repo from a machine that has them, or pin versions" \
        "it holds in java/pom.xml."
fi

[ $# -gt 0 ] || set -- package
exec mvn -o -q -Dmaven.repo.local="$repo" "$@"
