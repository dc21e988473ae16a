/*
 * The pod sandbox ("pause") process for the e2e node: it holds the pod's
 * namespaces and does nothing else. Built static, it is the whole image.
 * It exits on SIGINT/SIGTERM and reaps zombies (it is PID 1 of the pod when
 * the pod shares its PID namespace), as Kubernetes' own pause does.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { _exit(128 + sig); }
static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction sa = {0};
  sa.sa_handler = stop;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sa.sa_handler = reap;
  sa.sa_flags = SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);
  for (;;) pause();
}
