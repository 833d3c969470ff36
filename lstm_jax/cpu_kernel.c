// The plain LSTM's recurrence at batch 1-2 on x86-64 CPUs (AVX2 + FMA), as two XLA FFI
// handlers: the forward pass, and the backward pass through the recurrence. cpu_kernel.py
// says why it exists, builds it at first use and does the rest of the LSTM around it.
//
// The hidden units are split over the threads: the calling thread and `threads - 1` that
// each call starts. A thread reads only the rows of the recurrent matrix that feed its
// units (all four gates) each step, and its units' cell state never leaves it. One spin
// barrier per step: a step's h, or a step's partial dh (one per thread, summed in thread
// order, so results do not depend on timing), is then read by all threads. The sequences
// of a batch run one after another, each for its own length only.

#define _GNU_SOURCE
#include <errno.h>
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xla/ffi/api/c_api.h"

#define LANES 8        // floats per AVX register
#define TILE 64        // units per register tile of the forward matvec
#define MAX_THREADS 64
#define CACHE_LINE 64

static inline int round_up(int n, int m) { return (n + m - 1) / m * m; }

// ------------------------------------------------------------------ vector math

// exp(x), Cephes' single-precision polynomial (about 2 ulp over [-87, 88]).
static inline __m256 exp256(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));  // y 2^n
}

static inline __m256 sigmoid256(__m256 z) {
  __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), z))));
}

// tanh(z) = 2 sigmoid(2z) - 1, as fused.py computes it.
static inline __m256 tanh256(__m256 z) {
  __m256 two = _mm256_set1_ps(2.0f);
  return _mm256_fmsub_ps(two, sigmoid256(_mm256_mul_ps(two, z)), _mm256_set1_ps(1.0f));
}

// ------------------------------------------------------------------ the shared problem

typedef struct {
  _Alignas(CACHE_LINE) atomic_int step;  // steps this thread has finished
  char pad[CACHE_LINE - sizeof(atomic_int)];
} Arrival;

typedef struct {
  int time, batch, hidden, threads, units;  // units: per thread, a multiple of LANES
  const int32_t *lengths;                   // [batch]
  const float *wh;                          // [hidden, 4 hidden]
  // Forward.
  const float *xproj;                       // [time, batch, 4 hidden]: x W_x + b
  const float *h0, *c0;                     // [batch, hidden]
  float *ys, *h_final, *c_final;            // [time, batch, hidden], [batch, hidden] x2
  float *acts, *cs;                         // training: [time, batch, 4 hidden], [.., hidden]
  // Backward.
  const float *dys, *dh_final, *dc_final;
  float *dz, *dh0, *dc0;                    // [time, batch, 4 hidden], [batch, hidden] x2
  float *partial;                           // [2][threads][hidden rounded up to LANES]
  atomic_int go;                            // threads that run; -1: stop
  int failed;                               // a thread could not allocate its buffers
  Arrival arrived[MAX_THREADS];
} Problem;

// All threads have finished `step` steps. Spins: a step takes microseconds. Yields after a
// while, so that an oversubscribed machine still makes progress.
static void barrier(Problem *p, int me, int step) {
  atomic_store_explicit(&p->arrived[me].step, step, memory_order_release);
  for (int k = 0; k < p->threads; k++) {
    for (int spins = 0;
         atomic_load_explicit(&p->arrived[k].step, memory_order_acquire) < step; spins++) {
      _mm_pause();
      if (spins > 1000) sched_yield();
    }
  }
}

typedef struct {
  Problem *p;
  int me, first, count;  // units [first, first + count)
} Share;

static float *aligned_floats(size_t n) {
  void *ptr = NULL;
  if (posix_memalign(&ptr, CACHE_LINE, (n ? n : 1) * sizeof(float))) return NULL;
  memset(ptr, 0, (n ? n : 1) * sizeof(float));
  return ptr;
}

// Lanes [0, n) of a vector, n <= LANES: the mask for loads that stop at a share's last unit.
static inline __m256i first_lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The weights are read where XLA keeps them, recurrent_kernel <[H, 4H]> row-major: for one
// j, a gate's units are contiguous, so a thread's rows of W = recurrent_kernel^T are four
// runs of `count` floats per j. Packing them per call cost more (0.2-1.3 ms at H=256,
// fresh memory every call) than reading them at a stride.

// ------------------------------------------------------------------ forward

// z[0, 8 nv) += sum_j w[j * stride + (0, 8 nv)] h[j]: one gate's run of at most TILE units,
// the last vector loaded under `tail`.
static inline __attribute__((always_inline)) void tile_matvec(const float *w, size_t stride,
                                                              const float *h, int hidden,
                                                              float *z, int nv, __m256i tail) {
  __m256 acc[TILE / LANES];
  for (int v = 0; v < nv; v++) acc[v] = _mm256_load_ps(z + v * LANES);
  for (int j = 0; j < hidden; j++, w += stride) {
    __m256 hj = _mm256_broadcast_ss(h + j);
    for (int v = 0; v < nv - 1; v++)
      acc[v] = _mm256_fmadd_ps(_mm256_loadu_ps(w + v * LANES), hj, acc[v]);
    acc[nv - 1] = _mm256_fmadd_ps(_mm256_maskload_ps(w + (nv - 1) * LANES, tail), hj,
                                  acc[nv - 1]);
  }
  for (int v = 0; v < nv; v++) _mm256_store_ps(z + v * LANES, acc[v]);
}

// z[gate * units + u] += sum_j W[gate H + first + u, j] h[j] for the share's units u.
static void matvec(const Share *s, const float *h, float *z) {
  const Problem *p = s->p;
  for (int gate = 0; gate < 4; gate++)
    for (int u0 = 0; u0 < s->count; u0 += TILE) {
      int width = s->count - u0 < TILE ? s->count - u0 : TILE;
      int nv = round_up(width, LANES) / LANES;
      const float *w = p->wh + gate * p->hidden + s->first + u0;
      float *zt = z + gate * p->units + u0;
      __m256i tail = first_lanes(width - (nv - 1) * LANES);
      switch (nv) {  // constant trip counts, so that the accumulators stay in registers
        case 8: tile_matvec(w, 4 * p->hidden, h, p->hidden, zt, 8, tail); break;
        case 7: tile_matvec(w, 4 * p->hidden, h, p->hidden, zt, 7, tail); break;
        case 6: tile_matvec(w, 4 * p->hidden, h, p->hidden, zt, 6, tail); break;
        case 5: tile_matvec(w, 4 * p->hidden, h, p->hidden, zt, 5, tail); break;
        case 4: tile_matvec(w, 4 * p->hidden, h, p->hidden, zt, 4, tail); break;
        case 3: tile_matvec(w, 4 * p->hidden, h, p->hidden, zt, 3, tail); break;
        case 2: tile_matvec(w, 4 * p->hidden, h, p->hidden, zt, 2, tail); break;
        default: tile_matvec(w, 4 * p->hidden, h, p->hidden, zt, 1, tail); break;
      }
    }
}

static void forward_share(Share *s) {
  Problem *p = s->p;
  const int H = p->hidden, G = 4 * H, U = p->units, n = s->count;
  float *z = aligned_floats(4 * U), *c = aligned_floats(U), *h = aligned_floats(U);
  if (!z || !c || !h) p->failed = 1;
  int step = 0;
  for (int b = 0; b < p->batch; b++) {
    barrier(p, s->me, ++step);  // all allocated, or the previous sequence done
    if (p->failed) break;
    int length = p->lengths[b] < 0 ? 0 : p->lengths[b] > p->time ? p->time : p->lengths[b];
    memcpy(c, p->c0 + (size_t)b * H + s->first, n * sizeof(float));
    const float *h_prev = p->h0 + (size_t)b * H;
    for (int t = 0; t < length; t++) {
      size_t row = (size_t)t * p->batch + b;
      const float *x = p->xproj + row * G;
      for (int gate = 0; gate < 4; gate++) {  // lanes past n stay 0
        memcpy(z + gate * U, x + gate * H + s->first, n * sizeof(float));
        memset(z + gate * U + n, 0, (U - n) * sizeof(float));
      }
      matvec(s, h_prev, z);
      for (int u = 0; u < U; u += LANES) {
        __m256 i = sigmoid256(_mm256_load_ps(z + u));
        __m256 f = sigmoid256(_mm256_load_ps(z + U + u));
        __m256 g = tanh256(_mm256_load_ps(z + 2 * U + u));
        __m256 o = sigmoid256(_mm256_load_ps(z + 3 * U + u));
        __m256 cn = _mm256_fmadd_ps(f, _mm256_load_ps(c + u), _mm256_mul_ps(i, g));
        _mm256_store_ps(c + u, cn);
        _mm256_store_ps(h + u, _mm256_mul_ps(o, tanh256(cn)));
        if (p->acts) {
          _mm256_store_ps(z + u, i);
          _mm256_store_ps(z + U + u, f);
          _mm256_store_ps(z + 2 * U + u, g);
          _mm256_store_ps(z + 3 * U + u, o);
        }
      }
      memcpy(p->ys + row * H + s->first, h, n * sizeof(float));
      if (p->acts) {
        for (int gate = 0; gate < 4; gate++)
          memcpy(p->acts + row * G + gate * H + s->first, z + gate * U, n * sizeof(float));
        memcpy(p->cs + row * H + s->first, c, n * sizeof(float));
      }
      barrier(p, s->me, ++step);  // this step's h complete in ys
      h_prev = p->ys + row * H;
    }
    for (int t = length; t < p->time; t++) {  // padding: no output, nothing saved
      size_t row = (size_t)t * p->batch + b;
      memset(p->ys + row * H + s->first, 0, n * sizeof(float));
      if (p->acts) {
        for (int gate = 0; gate < 4; gate++)
          memset(p->acts + row * G + gate * H + s->first, 0, n * sizeof(float));
        memset(p->cs + row * H + s->first, 0, n * sizeof(float));
      }
    }
    memcpy(p->h_final + (size_t)b * H + s->first, h_prev + s->first, n * sizeof(float));
    memcpy(p->c_final + (size_t)b * H + s->first, c, n * sizeof(float));
  }
  free(z); free(c); free(h);
}

// ------------------------------------------------------------------ backward

// Lane k: the sum of a[k]'s lanes.
static inline __m256 sum_lanes8(const __m256 a[8]) {
  __m256 s0123 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  __m256 s4567 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20),
                       _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

// out[j] = sum over the share's rows r of W[r, j] dz[r], for j < hidden, 8 j at a time:
// each j is a dot product of runs of recurrent_kernel's row j with the share's dz.
static void matvec_t(const Share *s, const float *dz, float *out) {
  const Problem *p = s->p;
  const int H = p->hidden, U = p->units;
  for (int j0 = 0; j0 < H; j0 += LANES) {
    const float *rows[LANES];  // rows past H repeat the last; their sums are not used
    for (int k = 0; k < LANES; k++)
      rows[k] = p->wh + (size_t)(j0 + k < H ? j0 + k : H - 1) * 4 * H + s->first;
    __m256 acc[LANES];
    for (int k = 0; k < LANES; k++) acc[k] = _mm256_setzero_ps();
    for (int gate = 0; gate < 4; gate++)
      for (int u = 0; u < s->count; u += LANES) {
        __m256 d = _mm256_load_ps(dz + gate * U + u);
        __m256i lanes = first_lanes(s->count - u);
        for (int k = 0; k < LANES; k++)
          acc[k] = _mm256_fmadd_ps(_mm256_maskload_ps(rows[k] + gate * H + u, lanes), d, acc[k]);
      }
    _mm256_store_ps(out + j0, sum_lanes8(acc));
  }
}

static inline __m256 load_units(const float *src, int n, int u) {
  // Units u..u+7 of a share with n units; lanes past n read as 0.
  return u >= n ? _mm256_setzero_ps() : _mm256_maskload_ps(src + u, first_lanes(n - u));
}

static void backward_share(Share *s) {
  Problem *p = s->p;
  const int H = p->hidden, G = 4 * H, U = p->units, n = s->count;
  const size_t part = (size_t)round_up(H, LANES);  // one thread's partial dh
  float *dz = aligned_floats(4 * U), *dh = aligned_floats(U), *dc = aligned_floats(U);
  if (!dz || !dh || !dc) p->failed = 1;
  int step = 0;
  __m256 one = _mm256_set1_ps(1.0f);
  for (int b = 0; b < p->batch; b++) {
    barrier(p, s->me, ++step);
    if (p->failed) break;
    int length = p->lengths[b] < 0 ? 0 : p->lengths[b] > p->time ? p->time : p->lengths[b];
    memcpy(dh, p->dh_final + (size_t)b * H + s->first, n * sizeof(float));
    memcpy(dc, p->dc_final + (size_t)b * H + s->first, n * sizeof(float));
    for (int t = length; t < p->time; t++) {
      float *out = p->dz + ((size_t)t * p->batch + b) * G;
      for (int gate = 0; gate < 4; gate++) memset(out + gate * H + s->first, 0, n * sizeof(float));
    }
    for (int t = length - 1; t >= 0; t--) {
      size_t row = (size_t)t * p->batch + b;
      const float *a = p->acts + row * G + s->first;
      const float *c_now = p->cs + row * H + s->first;
      const float *c_prev = t ? p->cs + (row - p->batch) * H + s->first
                              : p->c0 + (size_t)b * H + s->first;
      const float *dy = p->dys + row * H + s->first;
      // Lanes past n read 0 for every gate, so their dz is 0 too.
      for (int u = 0; u < U; u += LANES) {
        __m256 i = load_units(a, n, u), f = load_units(a + H, n, u);
        __m256 g = load_units(a + 2 * H, n, u), o = load_units(a + 3 * H, n, u);
        __m256 tanh_c = tanh256(load_units(c_now, n, u));
        __m256 dhv = _mm256_add_ps(load_units(dy, n, u), _mm256_load_ps(dh + u));
        __m256 dcv = _mm256_fmadd_ps(_mm256_mul_ps(dhv, o),
                                     _mm256_fnmadd_ps(tanh_c, tanh_c, one), _mm256_load_ps(dc + u));
        __m256 dci = _mm256_mul_ps(dcv, i);
        _mm256_store_ps(dz + u, _mm256_mul_ps(_mm256_mul_ps(dcv, g),
                                              _mm256_mul_ps(i, _mm256_sub_ps(one, i))));
        _mm256_store_ps(dz + U + u, _mm256_mul_ps(_mm256_mul_ps(dcv, load_units(c_prev, n, u)),
                                                  _mm256_mul_ps(f, _mm256_sub_ps(one, f))));
        _mm256_store_ps(dz + 2 * U + u, _mm256_mul_ps(dci, _mm256_fnmadd_ps(g, g, one)));
        _mm256_store_ps(dz + 3 * U + u, _mm256_mul_ps(_mm256_mul_ps(dhv, tanh_c),
                                                      _mm256_mul_ps(o, _mm256_sub_ps(one, o))));
        _mm256_store_ps(dc + u, _mm256_mul_ps(dcv, f));
      }
      for (int gate = 0; gate < 4; gate++)
        memcpy(p->dz + row * G + gate * H + s->first, dz + gate * U, n * sizeof(float));
      // Double-buffered: a thread writes the next step's partial only after every thread
      // has passed this step's barrier, hence finished reading the buffer of two steps ago.
      matvec_t(s, dz, p->partial + ((size_t)(step & 1) * p->threads + s->me) * part);
      barrier(p, s->me, ++step);
      const float *parts = p->partial + (size_t)((step - 1) & 1) * p->threads * part;
      for (int u = 0; u < n; u++) {
        float sum = 0.0f;
        for (int k = 0; k < p->threads; k++) sum += parts[k * part + s->first + u];
        dh[u] = sum;
      }
    }
    memcpy(p->dh0 + (size_t)b * H + s->first, dh, n * sizeof(float));
    memcpy(p->dc0 + (size_t)b * H + s->first, dc, n * sizeof(float));
  }
  free(dz); free(dh); free(dc);
}

// ------------------------------------------------------------------ threads

typedef struct {
  Problem *p;
  int me;
  void (*run)(Share *);
} Worker;

static void run_share(Problem *p, int me, void (*run)(Share *)) {
  Share s = {p, me, me * p->units, 0};
  s.count = p->hidden - s.first < p->units ? p->hidden - s.first : p->units;
  run(&s);
}

static void *worker_main(void *arg) {
  Worker *w = arg;
  int go;
  while ((go = atomic_load_explicit(&w->p->go, memory_order_acquire)) == 0) _mm_pause();
  if (w->me < go) run_share(w->p, w->me, w->run);
  return NULL;
}

// Splits the hidden units over min(available cores, hidden / LANES) threads; returns 0, or
// an errno where not even the calling thread's buffers could be allocated.
static int solve(Problem *p, void (*run)(Share *)) {
  cpu_set_t cores;
  int wanted = sched_getaffinity(0, sizeof cores, &cores) ? 1 : CPU_COUNT(&cores);
  int max_by_units = round_up(p->hidden, LANES) / LANES;
  if (wanted > max_by_units) wanted = max_by_units;
  if (wanted > MAX_THREADS) wanted = MAX_THREADS;
  if (wanted < 1) wanted = 1;
  pthread_t threads[MAX_THREADS];
  Worker workers[MAX_THREADS];
  atomic_store(&p->go, 0);
  int started = 1;
  for (; started < wanted; started++) {
    workers[started] = (Worker){p, started, run};
    if (pthread_create(&threads[started], NULL, worker_main, &workers[started])) break;
  }
  // The units are split only now, over the threads that did start.
  p->threads = started;
  p->units = round_up((p->hidden + started - 1) / started, LANES);
  while ((p->hidden + p->units - 1) / p->units < p->threads) p->threads--;  // none idle
  for (int k = 0; k < MAX_THREADS; k++) atomic_store(&p->arrived[k].step, 0);
  p->partial = run == backward_share
      ? aligned_floats((size_t)2 * p->threads * round_up(p->hidden, LANES)) : NULL;
  p->failed = run == backward_share && !p->partial;
  // Threads past p->threads (when the units left none for them) return at once.
  // Workers stay off the calling thread's core: placed there (where the scheduler may put
  // a new thread), two spinning threads share one core until it moves one, which made a
  // quarter of B=1 T=500 H=256 calls take twice as long (2 cores).
  if (started > 1) {
    cpu_set_t others = cores;
    CPU_CLR(sched_getcpu(), &others);
    for (int k = 1; k < started && CPU_COUNT(&others); k++)
      pthread_setaffinity_np(threads[k], sizeof others, &others);
  }
  atomic_store_explicit(&p->go, p->threads, memory_order_release);
  run_share(p, 0, run);
  for (int k = 1; k < started; k++) pthread_join(threads[k], NULL);
  free(p->partial);
  return p->failed ? ENOMEM : 0;
}

// ------------------------------------------------------------------ XLA FFI

static XLA_FFI_Error *ffi_error(const XLA_FFI_CallFrame *frame, XLA_FFI_Error_Code code,
                                const char *message) {
  XLA_FFI_Error_Create_Args args = {XLA_FFI_Error_Create_Args_STRUCT_SIZE, NULL, message, code};
  return frame->api->XLA_FFI_Error_Create(&args);
}

// NULL where XLA is only asking which FFI version the handler was built for, or not
// executing; else the frame.
static XLA_FFI_CallFrame *executing(XLA_FFI_CallFrame *frame) {
  XLA_FFI_Extension_Base *ext = frame->extension_start;
  if (ext && ext->type == XLA_FFI_Extension_Metadata) {
    XLA_FFI_Metadata *meta = ((XLA_FFI_Metadata_Extension *)ext)->metadata;
    meta->api_version.major_version = XLA_FFI_API_MAJOR;
    meta->api_version.minor_version = XLA_FFI_API_MINOR;
    meta->traits = 0;
    return NULL;
  }
  return frame->stage == XLA_FFI_ExecutionStage_EXECUTE ? frame : NULL;
}

static XLA_FFI_Buffer *buffer(void **values, int k) { return (XLA_FFI_Buffer *)values[k]; }

static void *data(void **values, int k) { return buffer(values, k)->data; }

// Checks a buffer's dtype and dims; writes a message and returns 0 where they differ.
static int check(void **values, int k, const char *name, XLA_FFI_DataType dtype, int rank,
                 const int64_t *dims, char *message) {
  XLA_FFI_Buffer *b = buffer(values, k);
  int ok = b->dtype == dtype && b->rank == rank;
  for (int d = 0; ok && d < rank; d++) ok = b->dims[d] == dims[d];
  if (!ok) snprintf(message, 256, "lstm_jax cpu_kernel: %s has an unexpected dtype or shape", name);
  return ok;
}

// Args: xproj <f32>[T, B, 4H], wh <f32>[H, 4H], h0, c0 <f32>[B, H], lengths <s32>[B].
// Rets: ys <f32>[T, B, H], h_final, c_final <f32>[B, H]; for training also
// acts <f32>[T, B, 4H] (i, f, g, o after their nonlinearities) and cs <f32>[T, B, H].
XLA_FFI_Error *lstm_jax_cpu_forward(XLA_FFI_CallFrame *frame) {
  if (!executing(frame)) return NULL;
  void **in = frame->args.args, **out = frame->rets.rets;
  if (frame->args.size != 5 || (frame->rets.size != 3 && frame->rets.size != 5))
    return ffi_error(frame, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                     "lstm_jax cpu_kernel forward: wrong number of arguments or results");
  const int64_t *d = buffer(in, 0)->dims;
  int64_t T = d[0], B = d[1], G = d[2], H = G / 4;
  int64_t tbg[] = {T, B, G}, tbh[] = {T, B, H}, hg[] = {H, G}, bh[] = {B, H}, b1[] = {B};
  char message[256];
  if (!(buffer(in, 0)->rank == 3 && G % 4 == 0 &&
        check(in, 1, "recurrent_kernel", XLA_FFI_DataType_F32, 2, hg, message) &&
        check(in, 2, "h0", XLA_FFI_DataType_F32, 2, bh, message) &&
        check(in, 3, "c0", XLA_FFI_DataType_F32, 2, bh, message) &&
        check(in, 4, "lengths", XLA_FFI_DataType_S32, 1, b1, message) &&
        check(out, 0, "ys", XLA_FFI_DataType_F32, 3, tbh, message) &&
        (frame->rets.size == 3 ||
         (check(out, 3, "acts", XLA_FFI_DataType_F32, 3, tbg, message) &&
          check(out, 4, "cs", XLA_FFI_DataType_F32, 3, tbh, message)))))
    return ffi_error(frame, XLA_FFI_Error_Code_INVALID_ARGUMENT, message);
  Problem p = {.time = T, .batch = B, .hidden = H, .lengths = data(in, 4), .wh = data(in, 1),
               .xproj = data(in, 0), .h0 = data(in, 2), .c0 = data(in, 3), .ys = data(out, 0),
               .h_final = data(out, 1), .c_final = data(out, 2),
               .acts = frame->rets.size == 5 ? data(out, 3) : NULL,
               .cs = frame->rets.size == 5 ? data(out, 4) : NULL};
  if (solve(&p, forward_share))
    return ffi_error(frame, XLA_FFI_Error_Code_RESOURCE_EXHAUSTED,
                     "lstm_jax cpu_kernel forward: out of memory for packed weights");
  return NULL;
}

// Args: wh <f32>[H, 4H], acts <f32>[T, B, 4H], cs <f32>[T, B, H], c0 <f32>[B, H],
// lengths <s32>[B], dys <f32>[T, B, H], dh_final, dc_final <f32>[B, H].
// Rets: dz <f32>[T, B, 4H] (gradient of the gate pre-activations), dh0, dc0 <f32>[B, H].
XLA_FFI_Error *lstm_jax_cpu_backward(XLA_FFI_CallFrame *frame) {
  if (!executing(frame)) return NULL;
  void **in = frame->args.args, **out = frame->rets.rets;
  if (frame->args.size != 8 || frame->rets.size != 3)
    return ffi_error(frame, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                     "lstm_jax cpu_kernel backward: wrong number of arguments or results");
  const int64_t *d = buffer(in, 1)->dims;
  int64_t T = d[0], B = d[1], G = d[2], H = G / 4;
  int64_t tbg[] = {T, B, G}, tbh[] = {T, B, H}, hg[] = {H, G}, bh[] = {B, H}, b1[] = {B};
  char message[256];
  if (!(buffer(in, 1)->rank == 3 && G % 4 == 0 &&
        check(in, 0, "recurrent_kernel", XLA_FFI_DataType_F32, 2, hg, message) &&
        check(in, 2, "cs", XLA_FFI_DataType_F32, 3, tbh, message) &&
        check(in, 3, "c0", XLA_FFI_DataType_F32, 2, bh, message) &&
        check(in, 4, "lengths", XLA_FFI_DataType_S32, 1, b1, message) &&
        check(in, 5, "dys", XLA_FFI_DataType_F32, 3, tbh, message) &&
        check(in, 6, "dh_final", XLA_FFI_DataType_F32, 2, bh, message) &&
        check(in, 7, "dc_final", XLA_FFI_DataType_F32, 2, bh, message) &&
        check(out, 0, "dz", XLA_FFI_DataType_F32, 3, tbg, message)))
    return ffi_error(frame, XLA_FFI_Error_Code_INVALID_ARGUMENT, message);
  Problem p = {.time = T, .batch = B, .hidden = H, .wh = data(in, 0), .acts = data(in, 1),
               .cs = data(in, 2), .c0 = data(in, 3), .lengths = data(in, 4),
               .dys = data(in, 5), .dh_final = data(in, 6), .dc_final = data(in, 7),
               .dz = data(out, 0), .dh0 = data(out, 1), .dc0 = data(out, 2)};
  if (solve(&p, backward_share))
    return ffi_error(frame, XLA_FFI_Error_Code_RESOURCE_EXHAUSTED,
                     "lstm_jax cpu_kernel backward: out of memory for packed weights");
  return NULL;
}
