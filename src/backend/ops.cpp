#include "dreambooth/backend/ops.h"

#include "dreambooth/core/error.h"

namespace db {

void Ops::copy_from(Ops& from, const Tensor& src, Tensor& dst) {
  DB_CHECK(&from == this || (from.device() == Device::CPU && device() == Device::CPU),
           "copy_from: ", from.name(), " to ", name(), " backends: not supported by this backend");
  copy(src, dst);
}

Tensor to_backend(Ops& ops, const Tensor& host, DType dtype) {
  DB_CHECK(host.defined() && host.device() == Device::CPU, "to_backend: expected a host tensor");
  if (ops.device() == Device::CPU && host.dtype() == dtype) return host;
  Tensor staged = ops.empty(host.shape(), host.dtype());
  ops.upload(host.raw(), staged);
  if (host.dtype() == dtype) return staged;
  Tensor out = ops.empty(host.shape(), dtype);
  ops.cast(staged, out);
  return out;
}

Tensor to_host(Ops& ops, const Tensor& t) {
  if (t.device() == Device::CPU && ops.device() == Device::CPU) {
    ops.synchronize();
    return t;
  }
  Tensor out = Tensor::empty(t.shape(), t.dtype());
  ops.download(t, out.raw());
  ops.synchronize();
  return out;
}

Tensor to_host(Ops& ops, const Tensor& t, DType dtype) {
  if (t.dtype() == dtype) return to_host(ops, t);
  Tensor converted = ops.empty(t.shape(), dtype);
  ops.cast(t, converted);
  return to_host(ops, converted);
}

}  // namespace db
