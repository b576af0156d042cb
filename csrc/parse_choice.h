// The one string-to-enum parser of the ops' string options (activation,
// pixel_loss, mode, pooling, form, reduction, ce_family, the CUDA forward
// strategy): the value a name stands for, or a ValueError that lists the
// choices, "fastdice: pooling must be 'global', 'batch' or 'sample', got 'x'".
#pragma once

#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <initializer_list>
#include <string>

namespace fastdice {

template <typename E>
struct Choice {
  const char* name;
  E value;
};

template <typename E>
E parse_choice(c10::string_view name, const char* what, std::initializer_list<Choice<E>> choices) {
  for (const Choice<E>& c : choices) {
    if (name == c.name) return c.value;
  }
  std::string list;
  size_t i = 0;
  for (const Choice<E>& c : choices) {
    if (i > 0) list += i + 1 == choices.size() ? " or " : ", ";
    list += std::string("'") + c.name + "'";
    ++i;
  }
  TORCH_CHECK_VALUE(false, "fastdice: ", what, " must be ", list, ", got '", std::string(name), "'");
  return choices.begin()->value;  // not reached
}

}  // namespace fastdice
