// Turns runtime options into compile-time template parameters (the pattern of
// flash-attention's static_switch.h), so kernels never branch per element on
// the activation or on which statistics they gather.
#pragma once

#include "dice_math.h"

#define FD_BOOL_SWITCH(COND, CONST_NAME, ...) \
  [&] {                                       \
    if (COND) {                               \
      constexpr static bool CONST_NAME = true; \
      return __VA_ARGS__();                   \
    } else {                                  \
      constexpr static bool CONST_NAME = false; \
      return __VA_ARGS__();                   \
    }                                         \
  }()

#define FD_ACTIVATION_SWITCH(ACT, CONST_NAME, ...)                                   \
  [&] {                                                                               \
    switch (ACT) {                                                                    \
      case ::fastdice::Activation::kSigmoid: {                                        \
        constexpr static ::fastdice::Activation CONST_NAME = ::fastdice::Activation::kSigmoid; \
        return __VA_ARGS__();                                                         \
      }                                                                               \
      case ::fastdice::Activation::kSoftmax: {                                        \
        constexpr static ::fastdice::Activation CONST_NAME = ::fastdice::Activation::kSoftmax; \
        return __VA_ARGS__();                                                         \
      }                                                                               \
      default: {                                                                      \
        constexpr static ::fastdice::Activation CONST_NAME = ::fastdice::Activation::kNone; \
        return __VA_ARGS__();                                                         \
      }                                                                               \
    }                                                                                 \
  }()

// kPixel: whether a pixel loss is fused. Never true with activation 'none'
// (prepare_problem rejects that pairing), so those kernels are not compiled.
#define FD_PIXEL_SWITCH(ACT, PIXEL_LOSS, CONST_NAME, ...)                 \
  [&] {                                                                  \
    if ((ACT) != ::fastdice::Activation::kNone &&                         \
        (PIXEL_LOSS) != ::fastdice::PixelLoss::kNone) {                   \
      constexpr static bool CONST_NAME = (ACT) != ::fastdice::Activation::kNone; \
      return __VA_ARGS__();                                              \
    } else {                                                             \
      constexpr static bool CONST_NAME = false;                          \
      return __VA_ARGS__();                                              \
    }                                                                    \
  }()
