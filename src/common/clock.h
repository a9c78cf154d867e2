/* Monotonic wall-clock seconds, for progress lines and benchmarks. */
#ifndef PESO_COMMON_CLOCK_H
#define PESO_COMMON_CLOCK_H

double peso_now(void);

#endif
