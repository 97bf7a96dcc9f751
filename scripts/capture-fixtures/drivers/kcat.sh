#!/usr/bin/env bash
# Drives Debian's kcat (librdkafka 2.0.2) through the recording proxy: metadata, idempotent
# produce with every codec, plain consume, offset query by timestamp, and a balanced consumer
# group that commits and leaves. Last stdout line: the client versions as JSON.
# Usage: kcat.sh BOOTSTRAP TOPIC GROUP
set -euo pipefail
bootstrap=$1 topic=$2 group=$3
# Messages per produce run: small, so Fetch responses stay small in the fixtures.
messages_per_codec=3

kcat -b "$bootstrap" -L -t "$topic" >/dev/null

for codec in none gzip snappy lz4 zstd; do
  for i in $(seq 1 "$messages_per_codec"); do
    echo "key-$codec-$i:value $i compressed with $codec"
  done | kcat -b "$bootstrap" -P -t "$topic" -p 0 -K: -z "$codec" \
    -H "source=kcat" -H "codec=$codec" -X enable.idempotence=true
done

# Plain consumer (ListOffsets + Fetch), exits at the end of the partition.
kcat -b "$bootstrap" -C -t "$topic" -p 0 -o beginning -e -q >/dev/null

# ListOffsets by timestamp (0 = earliest record at or after the epoch).
kcat -b "$bootstrap" -Q -t "$topic:0:0" >/dev/null

# Balanced consumer group: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, OffsetFetch,
# OffsetCommit, LeaveGroup. -e makes it exit once every assigned partition is at its end.
timeout 60 kcat -b "$bootstrap" -G "$group" -X auto.offset.reset=earliest \
  -X auto.commit.interval.ms=200 -X heartbeat.interval.ms=500 -e -q "$topic" >/dev/null

version=$(kcat -V | sed -n 's/^Version \([^ ]*\) .*librdkafka \([^ ]*\) .*/{"kcat": "\1", "librdkafka": "\2"}/p')
echo "$version"
