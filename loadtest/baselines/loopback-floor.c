// The machine's floor for fan-out on loopback: what one small TCP write per delivery costs
// the sender's kernel, with no user-space work at all (no framing, no queues, no runtime).
//
// A writer accepts N loopback TCP connections from a reader process, then R times at 10/s
// writes one 110-byte message (a 100-byte payload in a WebSocket frame, as `loadtest fanout
// --size 100` sends) to each socket; the reader drains them with epoll, as a load client does.
// Both report their CPU time per message (getrusage). On loopback the writer's system time
// includes the receiving socket's TCP work (softirq in the sender's context), exactly as the
// hub's does in BENCHMARKS.md, so the two figures compare directly.
//
//   gcc -O2 -o /tmp/loopback-floor loopback-floor.c                  # write(2), writev(2)
//   gcc -O2 -DWITH_URING -o /tmp/loopback-floor loopback-floor.c -luring  # + io_uring (liburing-dev)
//   /tmp/loopback-floor N ROUNDS MODE     # MODE 0 write, 1 writev (header + payload), 2 io_uring
//
// Bounded: N sockets, ROUNDS rounds, loopback only; the reader gives up after 5 s of silence.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef WITH_URING
#include <liburing.h>
#endif

#define MSG 110

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void cpu(double *user, double *sys) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  *user = r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6;
  *sys = r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

static void reader(struct sockaddr_in *addr, int n, int rounds) {
  int ep = epoll_create1(0);
  for (int i = 0; i < n; i++) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)addr, sizeof *addr)) {
      perror("reader: connect");
      exit(1);
    }
    fcntl(s, F_SETFL, O_NONBLOCK);
    struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.fd = s};
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &e);
  }
  long total = 0, want = (long)n * rounds * MSG;
  char buf[8192];
  struct epoll_event ev[256];
  while (total < want) {
    int k = epoll_wait(ep, ev, 256, 5000);
    if (k <= 0) break;
    for (int i = 0; i < k; i++) {
      for (;;) {
        ssize_t r = read(ev[i].data.fd, buf, sizeof buf);
        if (r <= 0) break;
        total += r;
      }
    }
  }
  double u, s;
  cpu(&u, &s);
  printf("reader: %ld of %ld bytes; user %.3f + sys %.3f us per message\n", total, want,
         u * 1e6 / ((double)n * rounds), s * 1e6 / ((double)n * rounds));
  exit(total == want ? 0 : 1);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s N ROUNDS MODE (0 write, 1 writev, 2 io_uring)\n", argv[0]);
    return 2;
  }
  int n = atoi(argv[1]), rounds = atoi(argv[2]), mode = atoi(argv[3]);
  if (n <= 0 || rounds <= 0 || mode < 0 || mode > 2) {
    fprintf(stderr, "N and ROUNDS must be positive, MODE 0, 1 or 2\n");
    return 2;
  }
#ifndef WITH_URING
  if (mode == 2) {
    fprintf(stderr, "built without io_uring: rebuild with -DWITH_URING -luring\n");
    return 2;
  }
#endif
  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof addr;
  if (bind(ls, (struct sockaddr *)&addr, sizeof addr) || listen(ls, 65535) ||
      getsockname(ls, (struct sockaddr *)&addr, &alen)) {
    perror("listen");
    return 1;
  }
  pid_t child = fork();
  if (child == 0) reader(&addr, n, rounds);

  int *socks = malloc(n * sizeof(int));
  for (int i = 0; i < n; i++) {
    socks[i] = accept(ls, 0, 0);
    if (socks[i] < 0) {
      perror("accept");
      return 1;
    }
    setsockopt(socks[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(socks[i], F_SETFL, O_NONBLOCK);
  }
  sleep(1);
  char msg[MSG];
  memset(msg, 'x', MSG);
  msg[0] = (char)0x81; // FIN + text
  msg[1] = MSG - 2;    // unmasked, 108 bytes
#ifdef WITH_URING
  struct io_uring ring;
  if (mode == 2 && io_uring_queue_init(4096, &ring, 0)) {
    perror("io_uring_queue_init");
    return 1;
  }
#endif
  double u0, s0, u1, s1, burst = 0, t0 = now();
  long short_writes = 0;
  cpu(&u0, &s0);
  for (int r = 0; r < rounds; r++) {
    while (now() < t0 + r * 0.1) usleep(1000);
    double b0 = now();
    if (mode == 2) {
#ifdef WITH_URING
      for (int i = 0; i < n;) {
        int k = 0;
        for (; i < n && k < 4096; i++, k++)
          io_uring_prep_send(io_uring_get_sqe(&ring), socks[i], msg, MSG, 0);
        io_uring_submit_and_wait(&ring, k);
        for (int j = 0; j < k; j++) {
          struct io_uring_cqe *cqe;
          io_uring_wait_cqe(&ring, &cqe);
          if (cqe->res != MSG) short_writes++;
          io_uring_cqe_seen(&ring, cqe);
        }
      }
#endif
    } else {
      for (int i = 0; i < n; i++) {
        struct iovec v[2] = {{msg, 2}, {msg + 2, MSG - 2}};
        ssize_t w = mode == 1 ? writev(socks[i], v, 2) : write(socks[i], msg, MSG);
        if (w != MSG) short_writes++;
      }
    }
    burst += now() - b0;
  }
  cpu(&u1, &s1);
  double per = 1e6 / ((double)n * rounds);
  printf("writer: N=%d rounds=%d mode=%s: user %.3f + sys %.3f us per write; "
         "one round of N writes takes %.1f ms; %ld short writes\n",
         n, rounds, mode == 0 ? "write" : mode == 1 ? "writev" : "io_uring", (u1 - u0) * per,
         (s1 - s0) * per, burst * 1000 / rounds, short_writes);
  fflush(stdout);
  int status;
  waitpid(child, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 && short_writes == 0 ? 0 : 1;
}
