// The block-sparse FC loops, written once over a 16-lane vector type and included by each per-ISA file
// (block_fc_portable.cc, block_fc_avx2.cc, block_fc_avx512.cc, block_fc_neon.cc). The includer defines
// DC_BLOCK_TARGET (the function attribute every function of its path needs, e.g. the AVX-512 target; empty
// for the portable path) and DC_BLOCK_INLINE, and supplies an `Ops` class with:
//   using V;                               16 float lanes
//   explicit Ops(const BlockPlan&);        loads what the lookups keep in registers (the codebook)
//   V Zero(); V Add(V, V); V Fma(V a, V b, V acc) (acc + a * b); float Sum(V); void Store(float*, V);
//   void Sum4(V a, V b, V c, V d, float* out)  out[k] = Sum of the k-th vector
//   void Weights4(codes, V& w0, .., V& w3) the weights of four vectors from their 64 codes, interleaved:
//                                          byte 4 * i + k is lane i of vector k (BlockPlan::codes)
//   template <int L> V LoadX(x, starts)    16 / L runs of L floats, x + starts[j] ...   (kCols)
//   template <int L> V BroadcastX(x, s)    16 / L values x[s[j]], each repeated L times  (kRows)
// Why a shared body and not templates with target attributes called across files: GCC and Clang refuse to
// inline a function with a wider target into one without it, so the loops must carry each path's target
// themselves. Everything here has internal linkage: each includer gets its own copy, compiled for its path.
#ifndef DC_KERNELS_BLOCK_FC_LOOPS_H_
#define DC_KERNELS_BLOCK_FC_LOOPS_H_

#include "kernels/block_fc_plan.h"

namespace dc::kernels::block {
namespace {

// The input one vector multiplies: runs of x for kCols blocks, broadcast x values for kRows blocks.
template <int L, bool kByRows, class Ops>
DC_BLOCK_INLINE typename Ops::V Input(const Ops& ops, const float* x, const uint32_t* starts) {
  if constexpr (kByRows) {
    return ops.template BroadcastX<L>(x, starts);
  } else {
    return ops.template LoadX<L>(x, starts);
  }
}

// Writes group g's outputs from its accumulated lanes: kCols, one row (all 16 lanes summed); kRows, the
// band's L rows (lane j * L + i belongs to row i), dropping rows past the matrix edge.
template <int L, bool kByRows, class Ops>
DC_BLOCK_INLINE void Finish(const Ops& ops, const typename Ops::V& acc, const BlockArgs& a, float* y, int64_t g) {
  if constexpr (!kByRows) {
    y[g] = Activate(ops.Sum(acc) + (a.bias ? a.bias[g] : 0.f), a.act);
  } else {
    float lanes[kVectorLanes];
    ops.Store(lanes, acc);
    const int64_t r0 = g * L;
    for (int i = 0; i < L && r0 + i < a.plan->rows; ++i) {
      float sum = 0.f;
      for (int j = 0; j < kVectorLanes / L; ++j) sum += lanes[j * L + i];
      y[r0 + i] = Activate(sum + (a.bias ? a.bias[r0 + i] : 0.f), a.act);
    }
  }
}

// Batch row b, groups [a.g0, a.g1), four vectors at a time (groups hold a multiple of four). Four
// accumulators: with one, the chain of dependent FMAs (4-cycle latency each) and not the loads would bound
// a long group. The lookup registers are loaded here, in the
// function that loops, so the compiler keeps them in registers.
template <class Ops, int L, bool kByRows>
DC_BLOCK_TARGET void GroupsOneRow(const BlockArgs& a, int64_t b) {
  constexpr int kBlocks = kVectorLanes / L;
  const Ops ops(*a.plan);
  const BlockPlan& p = *a.plan;
  const float* x = a.x + b * a.x_stride;
  float* y = a.y + b * a.y_stride;
  const uint8_t* codes = p.codes.data();
  const uint32_t* starts = p.start.data();
  for (int64_t g = a.g0; g < a.g1; ++g) {
    typename Ops::V acc0 = ops.Zero(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (size_t v = p.group_ptr[g], end = p.group_ptr[g + 1]; v < end; v += 4) {
      typename Ops::V w0, w1, w2, w3;
      ops.Weights4(codes + v * kVectorLanes, w0, w1, w2, w3);
      const uint32_t* s = starts + v * kBlocks;
      acc0 = ops.Fma(w0, Input<L, kByRows>(ops, x, s), acc0);
      acc1 = ops.Fma(w1, Input<L, kByRows>(ops, x, s + kBlocks), acc1);
      acc2 = ops.Fma(w2, Input<L, kByRows>(ops, x, s + 2 * kBlocks), acc2);
      acc3 = ops.Fma(w3, Input<L, kByRows>(ops, x, s + 3 * kBlocks), acc3);
    }
    Finish<L, kByRows>(ops, ops.Add(ops.Add(acc0, acc1), ops.Add(acc2, acc3)), a, y, g);
  }
}

// Batch rows b..b+3 together: each vector's codes are looked up once for all four.
template <class Ops, int L, bool kByRows>
DC_BLOCK_TARGET void GroupsFourRows(const BlockArgs& a, int64_t b) {
  constexpr int kBlocks = kVectorLanes / L;
  const Ops ops(*a.plan);
  const BlockPlan& p = *a.plan;
  const float* x0 = a.x + b * a.x_stride;
  const float *x1 = x0 + a.x_stride, *x2 = x1 + a.x_stride, *x3 = x2 + a.x_stride;
  float* y0 = a.y + b * a.y_stride;
  const uint8_t* codes = p.codes.data();
  const uint32_t* starts = p.start.data();
  for (int64_t g = a.g0; g < a.g1; ++g) {
    typename Ops::V acc0 = ops.Zero(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (size_t v = p.group_ptr[g], end = p.group_ptr[g + 1]; v < end; v += 4) {
      typename Ops::V w[4];
      ops.Weights4(codes + v * kVectorLanes, w[0], w[1], w[2], w[3]);
      for (int k = 0; k < 4; ++k) {
        const uint32_t* s = starts + (v + k) * kBlocks;
        acc0 = ops.Fma(w[k], Input<L, kByRows>(ops, x0, s), acc0);
        acc1 = ops.Fma(w[k], Input<L, kByRows>(ops, x1, s), acc1);
        acc2 = ops.Fma(w[k], Input<L, kByRows>(ops, x2, s), acc2);
        acc3 = ops.Fma(w[k], Input<L, kByRows>(ops, x3, s), acc3);
      }
    }
    if constexpr (!kByRows) {
      float sums[4];
      ops.Sum4(acc0, acc1, acc2, acc3, sums);
      const float bias = a.bias ? a.bias[g] : 0.f;
      for (int k = 0; k < 4; ++k) y0[k * a.y_stride + g] = Activate(sums[k] + bias, a.act);
    } else {
      Finish<L, kByRows>(ops, acc0, a, y0, g);
      Finish<L, kByRows>(ops, acc1, a, y0 + a.y_stride, g);
      Finish<L, kByRows>(ops, acc2, a, y0 + 2 * a.y_stride, g);
      Finish<L, kByRows>(ops, acc3, a, y0 + 3 * a.y_stride, g);
    }
  }
}

template <class Ops, int L, bool kByRows>
DC_BLOCK_TARGET void GroupsAllRows(const BlockArgs& a) {
  int64_t b = 0;
  for (; b + 4 <= a.nb; b += 4) GroupsFourRows<Ops, L, kByRows>(a, b);
  for (; b < a.nb; ++b) GroupsOneRow<Ops, L, kByRows>(a, b);
}

// The loops for the plan's block length and axis, with lookups `Ops`.
template <class Ops>
DC_BLOCK_TARGET void GroupsAnyShape(const BlockArgs& a) {
  const bool by_rows = a.plan->axis == codec::BlockAxis::kRows;
  switch (a.plan->block_len) {
    case 4:
      return by_rows ? GroupsAllRows<Ops, 4, true>(a) : GroupsAllRows<Ops, 4, false>(a);
    case 8:
      return by_rows ? GroupsAllRows<Ops, 8, true>(a) : GroupsAllRows<Ops, 8, false>(a);
    default:
      return by_rows ? GroupsAllRows<Ops, 16, true>(a) : GroupsAllRows<Ops, 16, false>(a);
  }
}

}  // namespace
}  // namespace dc::kernels::block

#endif  // DC_KERNELS_BLOCK_FC_LOOPS_H_
