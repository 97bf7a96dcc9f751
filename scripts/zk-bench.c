/*
 * zk-bench: the consensus benchmark's operation mix against ZooKeeper, for the side-by-side
 * figures of BENCHMARKS.md (issue 5). It mirrors `consensus-workload bench` (corebus's
 * consensus/examples/consensus-workload.rs) operation for operation, so that the two columns
 * of the report measure the same thing:
 *
 *   - K clients, each its own session (its own connection), the i-th client starting at
 *     server i mod N of the list;
 *   - each client creates a persistent node of DATA bytes under /bench-PID, then sets it with
 *     expected version 0, N times; every create and every set is one committed write;
 *   - closed loop by default (a client sends its next write when the previous one answered);
 *     with --rate W the K clients together offer W writes/s, each write has an intended send
 *     time and its latency counts from that time (coordinated omission corrected);
 *   - prints one JSON line: clients, writes, seconds, writes_per_second, p50_ms, p99_ms,
 *     max_ms, with the same percentile rule as the Rust side (sorted, index floor(len * q)).
 *
 * Uses the synchronous API of the multi-threaded C client (libzookeeper-mt), one thread per
 * client. Built by scripts/install-bench-deps; run by scripts/consensus-bench.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
/* The synchronous API exists only in the multi-threaded library. */
#define THREADED
#include <zookeeper/zookeeper.h>

/* How long a client waits for its session to be established (ms). */
#define SESSION_CONNECT_TIMEOUT_MS 10000
/* The session timeout asked of the servers (ms). */
#define SESSION_TIMEOUT_MS 10000

static char **servers;
static int n_servers;
static int clients = 1;
static long ops = 1000;
static int data_bytes = 100;
static double rate; /* writes/s over all clients; 0: closed loop */
static char prefix[64];
static double start_s;
static pthread_barrier_t ready;

struct worker {
    int k;
    uint64_t *lat_us;
    long n;
    int error;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_until(double t) {
    double d = t - now_s();
    if (d <= 0) return;
    struct timespec ts = {(time_t)d, (long)((d - (time_t)d) * 1e9)};
    nanosleep(&ts, NULL);
}

static void ignore_watch(zhandle_t *zh, int type, int state, const char *path, void *ctx) {
    (void)zh; (void)type; (void)state; (void)path; (void)ctx;
}

/* The connection string starting at server `first`, so clients spread over the group as the
 * Rust bench spreads them. */
static char *hosts_from(int first) {
    size_t len = 1;
    for (int i = 0; i < n_servers; i++) len += strlen(servers[i]) + 1;
    char *s = calloc(1, len);
    for (int i = 0; i < n_servers; i++) {
        if (i) strcat(s, ",");
        strcat(s, servers[(first + i) % n_servers]);
    }
    return s;
}

static zhandle_t *connect_session(int first) {
    char *hosts = hosts_from(first);
    zhandle_t *zh = zookeeper_init(hosts, ignore_watch, SESSION_TIMEOUT_MS, NULL, NULL, 0);
    free(hosts);
    if (!zh) return NULL;
    double deadline = now_s() + SESSION_CONNECT_TIMEOUT_MS / 1000.0;
    while (zoo_state(zh) != ZOO_CONNECTED_STATE) {
        if (now_s() > deadline) {
            zookeeper_close(zh);
            return NULL;
        }
        usleep(1000);
    }
    return zh;
}

static void *run_client(void *arg) {
    struct worker *w = arg;
    zhandle_t *zh = connect_session(w->k % n_servers);
    if (!zh) {
        fprintf(stderr, "zk-bench: client %d: no session within %d ms\n", w->k,
                SESSION_CONNECT_TIMEOUT_MS);
        w->error = 1;
    }
    pthread_barrier_wait(&ready);
    if (!zh) return NULL;
    char *data = malloc(data_bytes);
    memset(data, 'b', data_bytes);
    char path[128];
    for (long i = 0; i < ops && !w->error; i++) {
        snprintf(path, sizeof path, "%s/c%d-%ld", prefix, w->k, i);
        for (int step = 0; step < 2; step++) {
            long j = 2 * i + step; /* this client's j-th write */
            double t0;
            if (rate > 0) {
                t0 = start_s + (double)(j * clients + w->k) / rate;
                sleep_until(t0);
            } else {
                t0 = now_s();
            }
            int rc = step == 0 ? zoo_create(zh, path, data, data_bytes, &ZOO_OPEN_ACL_UNSAFE, 0,
                                            NULL, 0)
                               : zoo_set(zh, path, data, data_bytes, 0);
            if (rc != ZOK) {
                fprintf(stderr, "zk-bench: client %d: %s %s: %s\n", w->k,
                        step == 0 ? "create" : "set", path, zerror(rc));
                w->error = 1;
                break;
            }
            w->lat_us[w->n++] = (uint64_t)((now_s() - t0) * 1e6);
        }
    }
    free(data);
    zookeeper_close(zh);
    return NULL;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void usage(void) {
    fprintf(stderr, "usage: zk-bench --servers H:P[,H:P...] [--clients K] [--ops N] "
                    "[--rate WRITES_PER_S] [--data-bytes B]\n");
    exit(2);
}

int main(int argc, char **argv) {
    char *list = NULL;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) usage();
        if (!strcmp(argv[i], "--servers")) list = argv[++i];
        else if (!strcmp(argv[i], "--clients")) clients = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ops")) ops = atol(argv[++i]);
        else if (!strcmp(argv[i], "--rate")) rate = atof(argv[++i]);
        else if (!strcmp(argv[i], "--data-bytes")) data_bytes = atoi(argv[++i]);
        else usage();
    }
    if (!list || clients < 1 || ops < 1 || data_bytes < 0 || rate < 0) usage();
    servers = calloc(strlen(list) + 1, sizeof *servers);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) servers[n_servers++] = tok;
    zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
    /* Keep the server order we give (the client shuffles it by default). */
    zoo_deterministic_conn_order(1);

    snprintf(prefix, sizeof prefix, "/bench-%d", (int)getpid());
    zhandle_t *admin = connect_session(0);
    if (!admin) {
        fprintf(stderr, "zk-bench: no session with %s\n", servers[0]);
        return 1;
    }
    int rc = zoo_create(admin, prefix, "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
    if (rc != ZOK && rc != ZNODEEXISTS) {
        fprintf(stderr, "zk-bench: create %s: %s\n", prefix, zerror(rc));
        return 1;
    }

    struct worker *ws = calloc(clients, sizeof *ws);
    pthread_t *th = calloc(clients, sizeof *th);
    pthread_barrier_init(&ready, NULL, clients + 1);
    for (int k = 0; k < clients; k++) {
        ws[k].k = k;
        ws[k].lat_us = calloc(2 * ops, sizeof(uint64_t));
        if (pthread_create(&th[k], NULL, run_client, &ws[k])) {
            fprintf(stderr, "zk-bench: pthread_create: %s\n", strerror(errno));
            return 1;
        }
    }
    start_s = now_s() + 0.01; /* every session is up before the first intended send */
    pthread_barrier_wait(&ready);
    int failed = 0;
    long total = 0;
    for (int k = 0; k < clients; k++) {
        pthread_join(th[k], NULL);
        failed |= ws[k].error;
        total += ws[k].n;
    }
    double secs = now_s() - start_s;
    zookeeper_close(admin);
    if (failed) return 1;

    uint64_t *all = calloc(total ? total : 1, sizeof(uint64_t));
    long at = 0;
    for (int k = 0; k < clients; k++) {
        memcpy(all + at, ws[k].lat_us, ws[k].n * sizeof(uint64_t));
        at += ws[k].n;
    }
    qsort(all, total, sizeof(uint64_t), cmp_u64);
#define PCT(q) (total ? all[(long)(total * (q)) < total ? (long)(total * (q)) : total - 1] / 1000.0 : 0.0)
    printf("{\"clients\":%d,\"writes\":%ld,\"seconds\":%.3f,\"writes_per_second\":%.1f,"
           "\"offered_writes_per_second\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f}\n",
           clients, total, secs, total / secs, rate, PCT(0.50), PCT(0.99), PCT(1.0));
    return 0;
}
