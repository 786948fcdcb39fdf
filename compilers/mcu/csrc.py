"""Fixed C99 sources of the firmware (the generated model.h/model.c hold the model; see compilers/mcu/emit.py).

``LEARN_C``: the int8 kernels (forward, SP and BP updates) — integer arithmetic only, no libc, no malloc, every
buffer static (sizes from model.h). It mirrors :mod:`edgesp.int8` exactly (the spec; read its docstring).
``MAIN_C``: the driver — samples in and results out over semihosting file I/O, instruction counting with
SysTick, stack painting. ``START_C``: vector table and Reset_Handler. ``LINK_LD``: the linker script.
"""

LEARN_C = r"""
/* ---- int8 SP / BP learning kernels: integer-only, no libc, static buffers (see edgesp/int8.py) ---- */
uint32_t net_step_count;

static inline uint32_t lowbias32(uint32_t x) {
  x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16; return x;
}
static inline uint32_t salt(uint32_t layer) {
  return (uint32_t)SEED ^ ((layer + 1u) * 0x9E3779B9u) ^ (net_step_count * 0x85EBCA6Bu);
}
static inline uint32_t rnd(uint32_t s, uint32_t j) { return lowbias32((j * 0xC2B2AE35u) ^ s); }
/* floor((g + (r mod 2^k)) / 2^k): unbiased stochastic rounding; >> of a negative int32 is arithmetic (gcc) */
static inline int32_t sround(int32_t g, int k, uint32_t r) {
  return k ? (g + (int32_t)(r & ((1u << k) - 1u))) >> k : g;
}
static inline int32_t clamp32(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : (v > hi ? hi : v); }
static inline int8_t requant8(int32_t acc, int s) { return (int8_t)clamp32((acc + (1 << (s - 1))) >> s, 0, 127); }

/* acc[o, p] = b[o] + sum_{c,ky,kx} W[o, c, ky, kx] x[c, oy*sh+ky-ph, ox*sw+kx-pw]; blocks: requantised int8 out,
   head: int32 logits */
static void layer_fwd(const layer_t *L, const int8_t *x, int8_t *out, int32_t *logit) {
  const int K = L->cin * L->kh * L->kw, P = L->oh * L->ow;
  for (int o = 0; o < L->cout; o++) {
    const int8_t *w = L->w + o * K;
    if (L->kh == 1 && L->kw == 1 && L->ih == 1 && L->iw == 1) {
      int32_t acc = L->b[o];
      for (int c = 0; c < K; c++) acc += (int32_t)w[c] * x[c];
      if (L->relu) out[o] = requant8(acc, L->shift); else logit[o] = acc;
      continue;
    }
    for (int oy = 0; oy < L->oh; oy++)
      for (int ox = 0; ox < L->ow; ox++) {
        int32_t acc = L->b[o];
        for (int c = 0; c < L->cin; c++)
          for (int ky = 0; ky < L->kh; ky++) {
            int iy = oy * L->sh + ky - L->ph;
            if (iy < 0 || iy >= L->ih) continue;
            const int8_t *xr = x + (c * L->ih + iy) * L->iw;
            const int8_t *wr = w + (c * L->kh + ky) * L->kw;
            for (int kx = 0; kx < L->kw; kx++) {
              int ix = ox * L->sw + kx - L->pw;
              if (ix < 0 || ix >= L->iw) continue;
              acc += (int32_t)wr[kx] * xr[ix];
            }
          }
        out[o * P + oy * L->ow + ox] = requant8(acc, L->shift);
      }
  }
}

/* non-overlapping max pool of one stream (in place is not allowed: out != next) */
static void pool(const layer_t *L, const int8_t *out, int8_t *next) {
  const int H = L->oh / L->pool_h, W = L->ow / L->pool_w;
  if (L->pool_h == 1 && L->pool_w == 1) { for (int i = 0; i < L->cout * L->oh * L->ow; i++) next[i] = out[i]; return; }
  for (int c = 0; c < L->cout; c++)
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++) {
        int8_t m = -128;
        for (int a = 0; a < L->pool_h; a++)
          for (int b = 0; b < L->pool_w; b++) {
            int8_t v = out[(c * L->oh + y * L->pool_h + a) * L->ow + x * L->pool_w + b];
            if (v > m) m = v;
          }
        next[(c * H + y) * W + x] = m;
      }
}

/* W <- clamp(W - sround(G, k)), row o from the gradient row grow[K]; bias from gb */
static void apply_row(const layer_t *L, int o, const int32_t *grow, int32_t gb, uint32_t s) {
  const int K = L->cin * L->kh * L->kw;
  int8_t *w = L->w + o * K;
  for (int k = 0; k < K; k++) {
    int32_t v = (int32_t)w[k] - sround(grow[k], L->lr_shift, rnd(s, (uint32_t)(o * K + k)));
    w[k] = (int8_t)clamp32(v, -127, 127);
  }
  gb = clamp32(gb, -GB_MAX, GB_MAX) * (1 << BIAS_GRAD_SHIFT);
  L->b[o] = clamp32(L->b[o] - sround(gb, L->lr_shift, rnd(s, (uint32_t)(L->cout * K + o))), -B_MAX, B_MAX);
}

static int32_t grow[KMAX]; /* one row of the weight gradient (int32) */
#if RULE_BP == 0
static int8_t sin_[3][MAX_IN];  /* inputs of the current block: sample, target y, target n */
static int8_t sout[3][MAX_OUT]; /* pre-pool outputs of the current block */
#define BUF_IN sin_[0]
#define BUF_OUT sout[0]
#else
static int8_t acts[ACT_TOTAL]; /* every block input (+ pre-pool outputs) of one sample */
static int16_t dout[MAX_OUT];  /* dL/d(block output), int16 */
static int32_t gx[MAX_IN];     /* dL/d(block input), int32 accumulator */
#define BUF_IN ((int8_t *)gx)   /* inference reuses the gradient buffers (char may alias) */
#define BUF_OUT ((int8_t *)dout)
#endif

/* grow[c, ky, kx] += d * x[c, oy*sh+ky-ph, ox*sw+kx-pw] */
static inline void acc_patch(const layer_t *L, const int8_t *x, int32_t d, int oy, int ox) {
  if (!d) return;
  for (int c = 0; c < L->cin; c++)
    for (int ky = 0; ky < L->kh; ky++) {
      int iy = oy * L->sh + ky - L->ph;
      if (iy < 0 || iy >= L->ih) continue;
      const int8_t *xr = x + (c * L->ih + iy) * L->iw;
      int32_t *g = grow + (c * L->kh + ky) * L->kw;
      for (int kx = 0; kx < L->kw; kx++) {
        int ix = ox * L->sw + kx - L->pw;
        if (ix >= 0 && ix < L->iw) g[kx] += d * xr[ix];
      }
    }
}

/* head: integer softmax cross-entropy; hdelta = p - 256 e_y (Q8). Returns 1 if any delta is non-zero. */
static const int32_t EXP_LUT[4] = {32768, 27554, 23170, 19484};
static int32_t hdelta[NCLASS];
static int head_delta(const int8_t *x, int y, int32_t *logit) {
  layer_fwd(&LAYERS[NB], x, 0, logit);
  int32_t zmax = logit[0];
  for (int j = 1; j < NCLASS; j++) if (logit[j] > zmax) zmax = logit[j];
  uint32_t e[NCLASS], sum = 0;
  for (int j = 0; j < NCLASS; j++) {
    int32_t d = (zmax - logit[j]) >> HEAD_TEMP_SHIFT;
    e[j] = (d >> 2) < 16 ? (uint32_t)(EXP_LUT[d & 3] >> (d >> 2)) : 0u;
    sum += e[j];
  }
  int any = 0;
  for (int j = 0; j < NCLASS; j++) {
    hdelta[j] = (int32_t)((e[j] << 8) / sum) - (j == y ? 256 : 0);
    any |= hdelta[j] != 0;
  }
  return any;
}
/* rows with a non-zero delta: W[j] <- W[j] - sround(delta_j x), b[j] likewise */
static void head_apply(const int8_t *x) {
  const layer_t *L = &LAYERS[NB];
  uint32_t s = salt(NB);
  for (int j = 0; j < NCLASS; j++) {
    if (!hdelta[j]) continue;
    for (int k = 0; k < L->cin; k++) grow[k] = hdelta[j] * x[k];
    apply_row(L, j, grow, hdelta[j], s);
  }
}

int net_predict(const int8_t *x) {
  const int8_t *h = x;
  int8_t *a = BUF_IN, *b = BUF_OUT;
  for (int i = 0; i < NB; i++) {
    const layer_t *L = &LAYERS[i];
    layer_fwd(L, h, b, 0);
    pool(L, b, a);
    h = a;
  }
  static int32_t logit[NCLASS];
  layer_fwd(&LAYERS[NB], h, 0, logit);
  int best = 0;
  for (int j = 1; j < NCLASS; j++) if (logit[j] > logit[best]) best = j;
  return best;
}

#if RULE_BP == 0
/* ---- SP: three streams (sample h, target t of class y, target u of a negative class n), layer by layer ---- */

void net_step(const int8_t *x, int y) {
  const int n = (int)((y + 1 + lowbias32(salt(NEG_SALT)) % (NCLASS - 1)) % NCLASS);
  for (int i = 0; i < IN_SIZE; i++) sin_[0][i] = x[i];
  for (int i = 0; i < NB; i++) {
    const layer_t *L = &LAYERS[i];
    const int P = L->oh * L->ow, D = L->cout * P, K = L->cin * L->kh * L->kw;
    layer_fwd(L, sin_[0], sout[0], 0);
    const int PH = L->oh / L->pool_h, PW = L->ow / L->pool_w;
    if (i == 0) { /* block 0's targets: Z broadcast (channel) or upsampled over each pool window */
      for (int d = 0; d < D; d++) {
        int o = d / P, yy = (d % P) / L->ow, xx = (d % P) % L->ow;
        int zr = SIGNAL_CHANNEL ? o : (o * PH + yy / L->pool_h) * PW + xx / L->pool_w;
        sout[1][d] = Z[zr * NCLASS + y];
        sout[2][d] = Z[zr * NCLASS + n];
      }
    } else {
      layer_fwd(L, sin_[1], sout[1], 0);
      layer_fwd(L, sin_[2], sout[2], 0);
    }
    int32_t yt = 0, yu = 0;
    for (int d = 0; d < D; d++) { yt += sout[0][d] * sout[1][d]; yu += sout[0][d] * sout[2][d]; }
    if (yt - yu < (int32_t)MARGIN * D) {
      uint32_t s = salt((uint32_t)i);
      for (int o = 0; o < L->cout; o++) {
        for (int k = 0; k < K; k++) grow[k] = 0;
        int32_t gb = 0;
        for (int p = 0; p < P; p++) {
          int32_t h = sout[0][o * P + p], t = sout[1][o * P + p], u = sout[2][o * P + p];
          int32_t dh = h > 0 ? u - t : 0;
          int32_t dt = (i > 0 && t > 0) ? -h : 0, du = (i > 0 && u > 0) ? h : 0;
          gb += dh + dt + du;
          int oy = p / L->ow, ox = p % L->ow;
          acc_patch(L, sin_[0], dh, oy, ox);
          if (i > 0) { acc_patch(L, sin_[1], dt, oy, ox); acc_patch(L, sin_[2], du, oy, ox); }
        }
        apply_row(L, o, grow, gb, s);
      }
#if SIGNAL_LEARNED
      if (i == 0) {
        uint32_t sz = salt(SIGNAL_SALT);
        for (int r = 0; r < Z_ROWS; r++) {
          int32_t hz = 0;
          if (SIGNAL_CHANNEL) {
            for (int p = 0; p < P; p++) hz += sout[0][r * P + p];
          } else {
            int o = r / (PH * PW), yy = (r % (PH * PW)) / PW, xx = (r % (PH * PW)) % PW;
            for (int a = 0; a < L->pool_h; a++)
              for (int b = 0; b < L->pool_w; b++)
                hz += sout[0][(o * L->oh + yy * L->pool_h + a) * L->ow + xx * L->pool_w + b];
          }
          int j = r * NCLASS + y;
          Z[j] = (int8_t)clamp32(Z[j] - sround(-hz, SIGNAL_LR_SHIFT, rnd(sz, (uint32_t)j)), 0, 127);
          j = r * NCLASS + n;
          Z[j] = (int8_t)clamp32(Z[j] - sround(hz, SIGNAL_LR_SHIFT, rnd(sz, (uint32_t)j)), 0, 127);
        }
      }
#endif
    }
    for (int s = 0; s < 3; s++) pool(L, sout[s], sin_[s]);
  }
  static int32_t logit[NCLASS];
  if (head_delta(sin_[0], y, logit)) head_apply(sin_[0]);
  net_step_count++;
}
#else
/* ---- BP baseline: every block's input (and pre-pool output where it pools) is kept for the backward pass ---- */

void net_step(const int8_t *x, int y) {
  for (int i = 0; i < IN_SIZE; i++) acts[IN_OFF[0] + i] = x[i];
  for (int i = 0; i < NB; i++) {
    const layer_t *L = &LAYERS[i];
    layer_fwd(L, acts + IN_OFF[i], acts + OUT_OFF[i], 0);
    if (OUT_OFF[i] != IN_OFF[i + 1]) pool(L, acts + OUT_OFF[i], acts + IN_OFF[i + 1]);
  }
  const layer_t *H = &LAYERS[NB];
  const int8_t *hx = acts + IN_OFF[NB];
  static int32_t logit[NCLASS];
  if (!head_delta(hx, y, logit)) { net_step_count++; return; }
  for (int k = 0; k < H->cin; k++) { /* gx = (W_head^T delta + 2^7) >> 8, with the head's weights before the update */
    int32_t a = 0;
    for (int j = 0; j < NCLASS; j++) a += hdelta[j] * H->w[j * H->cin + k];
    gx[k] = (a + 128) >> 8;
  }
  head_apply(hx);
  for (int i = NB - 1; i >= 0; i--) {
    const layer_t *L = &LAYERS[i];
    const int P = L->oh * L->ow, D = L->cout * P, K = L->cin * L->kh * L->kw;
    const int8_t *out = acts + OUT_OFF[i], *xin = acts + IN_OFF[i];
    /* unpool to the first maximum of each window, ReLU mask, clamp to +-DELTA_MAX */
    for (int d = 0; d < D; d++) dout[d] = 0;
    const int Hh = L->oh / L->pool_h, Ww = L->ow / L->pool_w;
    for (int c = 0; c < L->cout; c++)
      for (int py = 0; py < Hh; py++)
        for (int px = 0; px < Ww; px++) {
          int best = -1; int8_t m = -128;
          for (int a = 0; a < L->pool_h; a++)
            for (int b = 0; b < L->pool_w; b++) {
              int idx = (c * L->oh + py * L->pool_h + a) * L->ow + px * L->pool_w + b;
              if (best < 0 || out[idx] > m) { m = out[idx]; best = idx; }
            }
          int32_t g = gx[(c * Hh + py) * Ww + px];
          dout[best] = (int16_t)(out[best] > 0 ? clamp32(g, -DELTA_MAX, DELTA_MAX) : 0);
        }
    if (i > 0) { /* gx = (col2im(W^T d) + 2^(s-1)) >> s with the old W */
      for (int j = 0; j < L->cin * L->ih * L->iw; j++) gx[j] = 0;
      for (int o = 0; o < L->cout; o++)
        for (int p = 0; p < P; p++) {
          int32_t d = dout[o * P + p];
          if (!d) continue;
          int oy = p / L->ow, ox = p % L->ow;
          for (int c = 0; c < L->cin; c++)
            for (int ky = 0; ky < L->kh; ky++) {
              int iy = oy * L->sh + ky - L->ph;
              if (iy < 0 || iy >= L->ih) continue;
              for (int kx = 0; kx < L->kw; kx++) {
                int ix = ox * L->sw + kx - L->pw;
                if (ix >= 0 && ix < L->iw)
                  gx[(c * L->ih + iy) * L->iw + ix] += d * L->w[o * K + (c * L->kh + ky) * L->kw + kx];
              }
            }
        }
      for (int j = 0; j < L->cin * L->ih * L->iw; j++)
        gx[j] = clamp32((gx[j] + (1 << (L->shift - 1))) >> L->shift, -DELTA_MAX, DELTA_MAX);
    }
    uint32_t s = salt((uint32_t)i);
    for (int o = 0; o < L->cout; o++) {
      for (int k = 0; k < K; k++) grow[k] = 0;
      int32_t gb = 0;
      for (int p = 0; p < P; p++) {
        int32_t d = dout[o * P + p];
        gb += d;
        acc_patch(L, xin, d, p / L->ow, p % L->ow);
      }
      apply_row(L, o, grow, gb, s);
    }
  }
  net_step_count++;
}
#endif
"""

MAIN_C = r"""
/* Firmware driver: job.bin in, out.bin out (semihosting file I/O); STAT lines on stdout. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "model.h"

void *sbrk(ptrdiff_t incr);

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define PAINT 0xC5C5C5C5u
extern uint32_t end, _estack;
static int8_t xbuf[IN_SIZE];

static inline uint32_t sp_now(void) { uint32_t s; __asm volatile("mov %0, sp" : "=r"(s)); return s; }
static uint32_t heap_top(void) { return (uint32_t)sbrk(0); }
static void paint(uint32_t lo, uint32_t hi) {
  for (uint32_t a = (lo + 3u) & ~3u; a < hi; a += 4) *(volatile uint32_t *)a = PAINT;
}
/* lowest word above lo that is no longer the paint pattern */
static uint32_t scan(uint32_t lo, uint32_t hi) {
  uint32_t a = (lo + 3u) & ~3u;
  while (a < hi && *(volatile uint32_t *)a == PAINT) a += 4;
  return a;
}
static int fail(const char *what) { printf("ERROR %s\n", what); return 3; }
static int read_sample(FILE *f, int *y) {
  int c;
  if (fread(xbuf, 1, IN_SIZE, f) != IN_SIZE || (c = fgetc(f)) == EOF) return 0;
  *y = c;
  return 1;
}

int main(void) {
  uint32_t peak = 0;
  FILE *f = fopen("job.bin", "rb");
  if (!f) return fail("cannot open job.bin");
  int32_t hdr[8];
  if (fread(hdr, 4, 8, f) != 8 || hdr[0] != 0x38505345 || hdr[4] != IN_SIZE || hdr[5] != PARAM_BYTES)
    return fail("job.bin header does not match this firmware");
  const int32_t n_eval = hdr[1], n_train = hdr[2], flags = hdr[3];
  net_step_count = (uint32_t)hdr[6];
  if (flags & 1)
    for (int i = 0; i < N_PARAMS; i++)
      if (fread(PARAM_PTR[i], 1, PARAM_SIZE[i], f) != PARAM_SIZE[i]) return fail("job.bin: short parameter block");
  long eval_at = ftell(f);
  FILE *o = fopen("out.bin", "wb");
  if (!o) return fail("cannot open out.bin");
  int y;
  for (int i = 0; i < n_eval; i++) {
    if (!read_sample(f, &y)) return fail("job.bin: short eval block");
    fputc(net_predict(xbuf), o);
  }
  if (fseek(f, eval_at + (long)n_eval * (IN_SIZE + 1), SEEK_SET)) return fail("seek");
  SYST_RVR = 0xFFFFFFu; SYST_CVR = 0; SYST_CSR = 5u; /* processor clock, no interrupt */
  uint64_t ticks = 0;
  uint32_t step_stack = 0, pred_stack = 0;
  for (int i = 0; i < n_train; i++) {
    if (!read_sample(f, &y)) return fail("job.bin: short train block");
    if (y >= NCLASS) return fail("label out of range");
    if (i == 0) { /* peak so far, then the stack of one learning step and of one prediction alone */
      uint32_t lo = heap_top() + 64, sp = sp_now() - 64;
      uint32_t a = scan(lo, sp);
      peak = (uint32_t)&_estack - a;
      paint(lo, sp);
      (void)net_predict(xbuf);
      pred_stack = sp - scan(lo, sp);
      paint(lo, sp);
    }
    uint32_t lo = heap_top() + 64, sp = sp_now() - 64;
    uint32_t t0 = SYST_CVR;
    net_step(xbuf, y);
    uint32_t t1 = SYST_CVR;
    ticks += (t0 - t1) & 0xFFFFFFu;
    if (i == 0) { step_stack = sp - scan(lo, sp); }
  }
  if (fseek(f, eval_at, SEEK_SET)) return fail("seek");
  for (int i = 0; i < n_eval; i++) {
    if (!read_sample(f, &y)) return fail("job.bin: short eval block");
    fputc(net_predict(xbuf), o);
  }
  if (flags & 2)
    for (int i = 0; i < N_PARAMS; i++)
      if (fwrite(PARAM_PTR[i], 1, PARAM_SIZE[i], o) != PARAM_SIZE[i]) return fail("out.bin: write failed");
  fclose(o);
  fclose(f);
  uint32_t a = scan(heap_top() + 64, sp_now() - 64);
  uint32_t p2 = (uint32_t)&_estack - a;
  if (p2 > peak) peak = p2;
  printf("STAT step_ticks %lu %lu\n", (unsigned long)(ticks >> 32), (unsigned long)(ticks & 0xFFFFFFFFu));
  printf("STAT step_count %lu\n", (unsigned long)net_step_count);
  printf("STAT step_stack %lu\n", (unsigned long)step_stack);
  printf("STAT predict_stack %lu\n", (unsigned long)pred_stack);
  printf("STAT peak_stack %lu\n", (unsigned long)peak);
  printf("STAT heap %lu\n", (unsigned long)(heap_top() - (uint32_t)&end));
  printf("STAT done\n");
  return 0;
}
"""

START_C = r"""
/* Start-up: vector table, Reset_Handler (copy .data, zero .bss, paint the stack/heap area), fault handlers. */
#include <stdint.h>
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack, end;
extern int main(void);
extern void initialise_monitor_handles(void);
extern void exit(int);
void _init(void) {}
void _fini(void) {}

static void semihost_exit_fault(void) { /* SYS_WRITE0 a message, then SYS_EXIT with a run-time error */
  static const char msg[] = "FAULT hard fault in firmware\n";
  register uint32_t r0 __asm("r0") = 0x04;
  register const char *r1 __asm("r1") = msg;
  __asm volatile("bkpt 0xAB" : : "r"(r0), "r"(r1) : "memory");
  register uint32_t e0 __asm("r0") = 0x18;
  register uint32_t e1 __asm("r1") = 0x20023;
  __asm volatile("bkpt 0xAB" : : "r"(e0), "r"(e1) : "memory");
  for (;;) {}
}
void Fault_Handler(void) { semihost_exit_fault(); }

void Reset_Handler(void) {
  uint32_t *src = &_sidata, *dst = &_sdata;
  while (dst < &_edata) *dst++ = *src++;
  for (dst = &_sbss; dst < &_ebss; dst++) *dst = 0;
  uint32_t sp;
  __asm volatile("mov %0, sp" : "=r"(sp));
  for (volatile uint32_t *p = &end; (uint32_t)p < sp - 64; p++) *p = 0xC5C5C5C5u;
#if defined(__ARM_FP)
  *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20); /* enable the FPU (CP10, CP11) */
#endif
  initialise_monitor_handles();
  exit(main());
}

__attribute__((section(".isr_vector"), used)) void (*const vectors[16])(void) = {
  (void (*)(void))(&_estack), Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
  Fault_Handler, 0, 0, 0, 0, Fault_Handler, Fault_Handler, 0, Fault_Handler, Fault_Handler,
};
"""

LINK_LD = r"""
/* RAM LENGTH is the target's SRAM: a model whose .data + .bss + reserve do not fit fails to link. */
MEMORY
{
  FLASH (rx)  : ORIGIN = {flash_origin:#010x}, LENGTH = {flash_bytes}
  RAM   (rwx) : ORIGIN = {ram_origin:#010x}, LENGTH = {sram_bytes}
}
ENTRY(Reset_Handler)
_estack = ORIGIN(RAM) + LENGTH(RAM);
_reserve = {reserve};   /* stack + libc heap (semihosting stdio buffers) */
SECTIONS
{
  .isr_vector : { KEEP(*(.isr_vector)) } > FLASH
  .text : { *(.text*) *(.rodata*) KEEP(*(.init)) KEEP(*(.fini)) . = ALIGN(4); } > FLASH
  .ARM.extab : { *(.ARM.extab* .gnu.linkonce.armextab.*) } > FLASH
  .ARM.exidx : { __exidx_start = .; *(.ARM.exidx*) __exidx_end = .; } > FLASH
  .init_array : { __init_array_start = .; KEEP(*(.init_array*)) __init_array_end = .; } > FLASH
  .fini_array : { __fini_array_start = .; KEEP(*(.fini_array*)) __fini_array_end = .; } > FLASH
  .preinit_array : { __preinit_array_start = .; KEEP(*(.preinit_array*)) __preinit_array_end = .; } > FLASH
  _sidata = LOADADDR(.data);
  .data : { . = ALIGN(4); _sdata = .; *(.data*) . = ALIGN(4); _edata = .; } > RAM AT > FLASH
  .bss (NOLOAD) : {
    . = ALIGN(4); _sbss = .; __bss_start__ = .; *(.bss*) *(COMMON) . = ALIGN(4); _ebss = .; __bss_end__ = .;
  } > RAM
  . = ALIGN(8);
  end = .;
  _end = .;
  ASSERT(end + _reserve <= _estack,
         "edgesp: the model does not fit the target's SRAM (.data + .bss + stack/heap reserve)")
}
"""
