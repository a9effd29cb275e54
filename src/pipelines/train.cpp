#include "dreambooth/pipelines/train.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>
#include <unistd.h>

#include "dreambooth/backend/device.h"
#include "dreambooth/core/log.h"
#include "dreambooth/core/stop_signal.h"
#include "dreambooth/core/version.h"
#include "dreambooth/diffusion/noise_schedule.h"
#include "dreambooth/dist/communicator.h"
#include "dreambooth/dist/world.h"
#include "dreambooth/io/checkpoint_dir.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/io/out_lock.h"
#include "dreambooth/io/safetensors.h"
#include "dreambooth/models/vae.h"
#include "dreambooth/pipelines/data_loader.h"
#include "dreambooth/pipelines/generate.h"
#include "dreambooth/pipelines/metrics_log.h"
#include "dreambooth/pipelines/lora_file.h"
#include "dreambooth/pipelines/train_step.h"
#include "train_checks.h"

namespace fs = std::filesystem;

namespace db {
namespace {

constexpr int kStateVersion = 1;

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

double rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  return 0;
}

std::string hms(double s) {
  if (!std::isfinite(s) || s < 0) s = 0;
  const long t = long(s + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  return buf;
}

// ---- checkpoints ----

// The whole models' f32 masters and AdamW moments in host memory, gathered from the ranks where the
// optimizer is sharded (a collective: every rank calls it; only rank 0 gets the unsharded ones, it
// alone writes). A frozen text encoder has no moments. A GPU pair gathers the text encoder on its
// device over te_comm (null: comm).
struct HostState {
  Tensor unet, text_encoder;  // masters
  std::vector<std::pair<std::string, Tensor>> moments;
};
HostState gather_state(Ops& ops, Communicator& comm, Communicator* te_comm, const TrainState& st,
                       bool with_moments) {
  HostState h;
  for (const auto& [name, b, master] :
       {std::tuple<const char*, const ModelBuffers*, Tensor*>{"unet", &st.unet_buf, &h.unet},
        {"text_encoder", &st.te_buf, &h.text_encoder}}) {
    Ops& bo = st.ops_for(*b, ops);
    Communicator* c = &bo != &ops && te_comm ? te_comm : &comm;
    if (b->master_sharded || comm.rank() == 0) *master = b->full_master_host(bo, c);
    if (with_moments && b->trained() && (b->sharded() || comm.rank() == 0)) {
      h.moments.emplace_back(std::string(name) + ".m", b->full_moment_host(bo, c, b->m));
      h.moments.emplace_back(std::string(name) + ".v", b->full_moment_host(bo, c, b->v));
    }
  }
  return h;
}

constexpr const char* kLoraWeights = "pytorch_lora_weights.safetensors";

void write_lora_output(Ops& ops, const std::string& path, const TrainState& st, DType dtype) {
  const Tensor up = to_host(ops, st.unet_lora.master);
  const Tensor tp = st.te_lora.trained() ? to_host(st.ops_for(st.te_lora, ops), st.te_lora.master) : Tensor();
  write_lora_weights(path, st.unet_lora.reg, up, st.te_lora.trained() ? &st.te_lora.reg : nullptr,
                     st.te_lora.trained() ? &tp : nullptr, st.lora.scale(),
                     st.lora.alpha > 0 ? st.lora.alpha : float(st.lora.rank), dtype);
}

// LoRA checkpoint: lora.safetensors = every adapter buffer's f32 master and moments (flat, registry
// layout), plus the weights file for users; the frozen base is not copied.
void write_lora_checkpoint(Ops& ops, const std::string& dir, const TrainState& st) {
  std::vector<std::pair<std::string, Tensor>> t;
  for (const auto& [name, b] :
       {std::pair<std::string, const ModelBuffers*>{"unet", &st.unet_lora}, {"text_encoder", &st.te_lora}})
    if (b->trained())
      for (const auto& [suffix, x] :
           {std::pair<const char*, const Tensor*>{".master", &b->master}, {".m", &b->m}, {".v", &b->v}})
        t.emplace_back(name + suffix, to_host(st.ops_for(*b, ops), *x));
  write_safetensors(dir + "/lora.safetensors", t, {{"adam_step", std::to_string(st.adam_step)}});
  write_lora_output(ops, dir + "/" + kLoraWeights, st, DType::F32);
}

// Weights (f32 masters) and AdamW moments (gather_state: the same full files sharded or not); a LoRA
// run's checkpoint holds its adapters instead. state.json, written last, lists every file (the marker).
void write_checkpoint(Ops& ops, const std::string& out, int64_t step, const TrainState& st,
                      const ModelFolder& base, const HostState& host, const nlohmann::json& state) {
  AtomicDir dir(out + "/" + checkpoint_name(step));
  if (st.lora_enabled()) {
    write_lora_checkpoint(ops, dir.path(), st);
  } else {
    save_component(dir.path(), Component::UNet, base.config_json(Component::UNet), st.unet_buf.reg, host.unet,
                   DType::F32);
    save_component(dir.path(), Component::TextEncoder, base.config_json(Component::TextEncoder),
                   st.te_buf.reg, host.text_encoder, DType::F32);
    write_safetensors(dir.path() + "/optimizer.safetensors", host.moments,
                      {{"adam_step", std::to_string(st.adam_step)}});
  }
  nlohmann::json marker = state;
  marker["files"] = nlohmann::json::object();  // what a complete checkpoint holds (checkpoint_dir.h)
  for (const auto& [rel, size] : checkpoint_files(dir.path())) marker["files"][rel] = size;
  write_json_file(dir.path() + "/state.json", marker);  // the marker: written last
  dir.commit();
}

// The model's whole moment `name` from the file; this rank's range [b.own_begin, b.own_end) into dst.
void read_flat(Ops& ops, const SafetensorsFile& f, const std::string& name, const ModelBuffers& b,
               Tensor& dst) {
  const SafeTensorInfo* t = f.find(name);
  DB_CHECK(
      t, f.path(), ": no tensor ", name,
      name.starts_with("text_encoder.") ? " (was the checkpoint written with a frozen text encoder?)" : "");
  DB_CHECK(shape_numel(t->shape) == b.reg.total_numel(), f.path(), ": ", name, " has ", shape_numel(t->shape),
           " elements, the model needs ", b.reg.total_numel(), " (a checkpoint of another model?)");
  Tensor host = Tensor::empty({b.reg.total_numel()});
  f.read_f32(*t, host.f32());
  ops.upload(host.f32() + b.own_begin, dst);
  ops.synchronize();
}

void upload_weights(Ops& ops, const std::string& dir, Component c, ModelBuffers& b) {
  const std::string path = find_weight_files(dir, c).path;
  const Tensor host = load_weights(path, b.reg);
  check_finite_weights(path, b.reg, host);
  b.load_master(ops, host);
}

void load_checkpoint(Ops& ops, const std::string& ckpt, TrainState& st) {
  if (st.lora_enabled()) {
    const SafetensorsFile f = SafetensorsFile::open(ckpt + "/lora.safetensors");
    for (const auto& [name, b] :
         {std::pair<std::string, ModelBuffers*>{"unet", &st.unet_lora}, {"text_encoder", &st.te_lora}})
      if (b->trained()) {
        Ops& bo = st.ops_for(*b, ops);
        read_flat(bo, f, name + ".master", *b, b->master);
        read_flat(bo, f, name + ".m", *b, b->m);
        read_flat(bo, f, name + ".v", *b, b->v);
        b->refresh_working(bo);
      }
    return;
  }
  upload_weights(ops, ckpt + "/unet", Component::UNet, st.unet_buf);
  upload_weights(st.ops_for(st.te_buf, ops), ckpt + "/text_encoder", Component::TextEncoder, st.te_buf);
  const SafetensorsFile f = SafetensorsFile::open(ckpt + "/optimizer.safetensors");
  read_flat(ops, f, "unet.m", st.unet_buf, st.unet_buf.m);
  read_flat(ops, f, "unet.v", st.unet_buf, st.unet_buf.v);
  if (st.te_buf.trained()) {
    read_flat(st.ops_for(st.te_buf, ops), f, "text_encoder.m", st.te_buf, st.te_buf.m);
    read_flat(st.ops_for(st.te_buf, ops), f, "text_encoder.v", st.te_buf, st.te_buf.v);
  }
}

// ---- the output pipeline folder ----

void copy_tree_atomic(const std::string& src, const std::string& dst) {
  const std::string tmp = dst + ".tmp-" + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::copy(src, tmp, fs::copy_options::recursive);
  fs::remove_all(dst);
  fs::rename(tmp, dst);
}

void write_pipeline(const std::string& out, const TrainState& st, const HostState& host,
                    const ModelFolder& base, DType dtype) {
  save_component(out, Component::UNet, base.config_json(Component::UNet), st.unet_buf.reg, host.unet, dtype);
  save_component(out, Component::TextEncoder, base.config_json(Component::TextEncoder), st.te_buf.reg,
                 host.text_encoder, dtype);
  {  // the frozen VAE, re-saved from the base weights (bit-identical in fp32)
    const ParamRegistry vreg = base.registry(Component::Vae);
    const Tensor vp = base.load(Component::Vae, vreg);
    save_component(out, Component::Vae, base.config_json(Component::Vae), vreg, vp, dtype);
  }
  // Everything else model_index.json names (tokenizer, scheduler, feature_extractor, ...), copied.
  for (const auto& e : fs::directory_iterator(base.dir())) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || name == "unet" || name == "text_encoder" || name == "vae") continue;
    if (!base.model_index.contains(name)) continue;
    copy_tree_atomic(e.path().string(), out + "/" + name);
  }
  nlohmann::json index = base.model_index;
  index["_dreambooth_trained_by"] = std::string("dreambooth ") + kVersion;
  write_json_file(out + "/model_index.json", index);  // last: the folder is complete
}

// ---- metrics ----

// The options a resumed run must share with the checkpoint's run to continue it exactly (state.json
// "options"). --max-steps may change (to extend a run); --gradient-checkpointing gives identical
// gradients either way.
// A float option as the shortest decimal that reads back as it ("0.0001", not 9.999999747378752e-05).
double shortest(float v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::strtod(std::string(buf, r.ptr).c_str(), nullptr);
}

nlohmann::json key_options(const TrainOptions& o) {
  return {{"lr", shortest(o.lr)},
          {"lr_scheduler", o.lr_scheduler},
          {"lr_warmup_steps", o.lr_warmup_steps},
          {"adam_beta1", o.adam_beta1},
          {"adam_beta2", o.adam_beta2},
          {"adam_epsilon", o.adam_epsilon},
          {"weight_decay", o.weight_decay},
          {"max_grad_norm", shortest(o.max_grad_norm)},
          {"prior_loss_weight", shortest(o.prior_loss_weight)},
          {"snr_gamma", shortest(o.snr_gamma)},
          {"offset_noise", o.offset_noise},
          {"train_text_encoder", o.train_text_encoder},
          {"use_cached_latents", o.use_cached_latents},
          {"lora_rank", o.lora_rank},
          {"lora_alpha", o.lora_alpha},
          {"lora_text_encoder", o.lora_text_encoder}};
}

struct RunIdentity {
  std::string model_fp, data_fp;
};

// What differs between the checkpoint's run (state.json) and this one; empty when it may resume.
std::vector<std::string> resume_differences(const nlohmann::json& s, const TrainOptions& o, const World& w,
                                            const RunIdentity& id) {
  std::vector<std::string> d;
  if (s.at("seed").get<uint64_t>() != o.seed)
    d.push_back(str_cat("seed: checkpoint ", s.at("seed"), ", --seed ", o.seed));
  const int64_t gb = s.at("batch_size").get<int64_t>() * s.at("world_size").get<int64_t>();
  if (gb != int64_t(o.batch_size) * w.size)
    d.push_back(str_cat("global batch (batch_size x world_size): checkpoint ", gb, ", this run ",
                        int64_t(o.batch_size) * w.size));
  if (s.at("gradient_accumulation_steps").get<int>() != o.gradient_accumulation_steps)
    d.push_back(str_cat("gradient_accumulation_steps: checkpoint ", s.at("gradient_accumulation_steps"),
                        ", this run ", o.gradient_accumulation_steps));
  if (s.contains("model_fingerprint") && s["model_fingerprint"] != id.model_fp)
    d.push_back(str_cat("model: checkpoint trained from ", s.value("model", std::string("?")),
                        " (fingerprint ", s["model_fingerprint"].get<std::string>().substr(0, 16),
                        "...), --model ", o.model, " has fingerprint ", id.model_fp.substr(0, 16), "..."));
  if (s.contains("data_fingerprint") && s["data_fingerprint"] != id.data_fp)
    d.push_back(str_cat("data: the instance/class shards differ from the checkpoint's (fingerprint ",
                        s["data_fingerprint"].get<std::string>().substr(0, 16), "..., now ",
                        id.data_fp.substr(0, 16), "...)"));
  if (s.contains("options")) {
    const nlohmann::json now = key_options(o);
    for (const auto& [k, v] : now.items())
      if (s["options"].contains(k) && s["options"][k] != v)
        d.push_back(str_cat(k, ": checkpoint ", s["options"][k].dump(), ", this run ", v.dump()));
  }
  return d;
}

// state.json of a checkpoint (train.h), less the file list write_checkpoint adds.
nlohmann::json checkpoint_state(const TrainOptions& o, int64_t step, const DataCursor& c, int64_t adam_step,
                                int64_t consecutive_bad, const LrSchedule& lr, const World& w,
                                const RunIdentity& id) {
  return {{"version", kStateVersion},
          {"step", step},
          {"data_cursor", {{"epoch", c.epoch}, {"position", c.position}}},
          {"seed", o.seed},
          {"adam_step", adam_step},
          {"consecutive_nonfinite", consecutive_bad},
          {"lr_scheduler",
           {{"name", lr.name},
            {"base_lr", lr.base_lr},
            {"warmup_steps", lr.warmup_steps},
            {"total_steps", lr.total_steps}}},
          {"world_size", w.size},
          {"batch_size", o.batch_size},
          {"gradient_accumulation_steps", o.gradient_accumulation_steps},
          {"train_text_encoder", o.train_text_encoder},
          {"model", o.model},
          {"model_fingerprint", id.model_fp},
          {"data_fingerprint", id.data_fp},
          {"options", key_options(o)},
          {"dreambooth_version", std::string(kVersion)}};
}

// Restores the process-wide settings run_train changes (tests run it in one process).
struct RunScope {
  double timeout = collective_timeout();
  ~RunScope() {
    set_collective_timeout(timeout);
    remove_stop_handlers();
  }
};

// Rank 0 takes the lock on OUT; every rank learns the outcome, and all fail together when it is held.
OutLock lock_out(const std::string& out, const World& w) {
  OutLock lock;
  int status = 0;  // 0 locked, 1 held by another run, 2 other error
  std::string msg;
  if (w.is_root()) {
    try {
      std::error_code ec;
      fs::create_directories(out, ec);
      if (ec) throw Error(out, ": cannot create the output folder: ", ec.message());
      lock = OutLock(out);
    } catch (const OutLockHeld& e) {
      status = 1, msg = e.what();
    } catch (const std::exception& e) {
      status = 2, msg = e.what();
    }
  }
  broadcast(&status, sizeof status);
  if (status == 1) throw UsageError("train: " + msg);
  if (status == 2) throw AgreedError(msg, w.is_root());
  return lock;
}

std::string validation_dir(const std::string& out, int64_t step) {
  return out + "/validation/step-" + std::to_string(step);
}

}  // namespace

uint64_t validation_seed(uint64_t seed) {
  uint64_t z = seed ^ 0x76616c6964617469ull;  // "validati"
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return (z ^ (z >> 31)) & ((uint64_t(1) << 53) - 1);  // exact as a double: jq / JavaScript read it
}

TrainResult run_train(const TrainOptions& o) {
  const World& w = world();
  const double t_start = now_s();
  DB_CHECK(!o.model.empty(), "train: --model is required");
  DB_CHECK(!o.instance.empty(), "train: --instance-data is required");
  DB_CHECK(!o.out.empty(), "train: --out is required");
  DB_CHECK(o.batch_size >= 1, "train: --batch-size must be >= 1 (got ", o.batch_size, ")");
  DB_CHECK(o.gradient_accumulation_steps >= 1, "train: --gradient-accumulation-steps must be >= 1");
  DB_CHECK(o.max_nonfinite_steps >= 1, "train: --max-nonfinite-steps must be >= 1");
  DB_CHECK(o.lr > 0 && std::isfinite(o.lr), "train: --lr must be > 0 (got ", o.lr, ")");
  make_lr_schedule(o.lr_scheduler, o.lr, o.lr_warmup_steps, 1);  // validates --lr-scheduler up front
  DB_CHECK(o.lr_warmup_steps >= 0, "train: --lr-warmup-steps must be >= 0");
  const bool validate = !o.validation_prompt.empty();
  if (validate) {
    DB_CHECK(o.validation_every >= 1, "train: --validation-every must be >= 1 with --validation-prompt (got ",
             o.validation_every, ")");
    DB_CHECK(o.validation_images >= 1, "train: --validation-images must be >= 1 (got ", o.validation_images,
             ")");
    DB_CHECK(o.validation_steps >= 1, "train: --validation-steps must be >= 1 (got ", o.validation_steps,
             ")");
  }
  const DType save_dtype = dtype_from_name(o.save_dtype);
  DB_CHECK(save_dtype == DType::F32 || save_dtype == DType::F16 || save_dtype == DType::BF16,
           "train: --save-dtype must be fp32, fp16 or bf16 (got ", o.save_dtype, ")");

  DB_CHECK(o.collective_timeout >= 0 && std::isfinite(o.collective_timeout),
           "train: --collective-timeout must be >= 0 seconds (got ", o.collective_timeout, ")");
  check_out_not_model(o.out, o.model);
  RunScope scope;
  set_collective_timeout(o.collective_timeout);
  install_stop_handlers();  // from here a SIGTERM / SIGUSR1 stops at a step boundary (kExitStopped)

  const ModelFolder base = ModelFolder::open(o.model);
  check_trainable_model(base);
  const OutLock lock = lock_out(o.out, w);
  if (o.resume.empty()) {
    const auto old = list_checkpoints(o.out);
    if (!old.empty() && !o.overwrite)
      throw UsageError(
          str_cat("train: --out ", o.out, " holds checkpoints of an earlier run (",
                  fs::path(old.back().path).filename().string(),
                  "): continue it with --resume latest (or auto), start afresh with --overwrite, "
                  "or choose another --out"));
    if (!old.empty() && w.is_root())
      for (const auto& c : old) {
        fs::remove_all(c.path);
        log_warn("train: --overwrite: removed ", c.path, " of an earlier run");
      }
    barrier();
  }
  const RunIdentity id{model_fingerprint(o.model), data_fingerprint(o.instance, o.class_data)};
  const NoiseSchedule sched(base.scheduler);
  // --gpus-per-rank 2: the UNet's backend first, the text encoder's (and VAE encoder's) second.
  OpsPair pair = o.gpus_per_rank == 2 ? make_ops_pair(o.device) : OpsPair{};
  const std::unique_ptr<Ops> ops = pair.first ? std::move(pair.first) : make_ops(o.device);
  Ops* const te_ops = pair.second.get();
  if (te_ops && w.is_root())
    log_info("train: --gpus-per-rank 2: UNet on CUDA device ", pair.first_device, ", text encoder on ",
             pair.second_device, ", copies between them ",
             pair.peer ? "peer to peer" : "staged through the host (no peer access)");
  const CudaBackend* cb = linked_cuda_backend ? linked_cuda_backend() : nullptr;
  const bool real_gpu = ops->device() == Device::CUDA && cb && !cb->emulated;
  const std::unique_ptr<Communicator> comm = make_communicator(*ops, real_gpu);
  // A GPU pair: one communicator per lane (NCCL binds one device each), the second for the text encoder.
  const std::unique_ptr<Communicator> te_comm =
      te_ops && w.size > 1 ? make_communicator(*te_ops, real_gpu) : nullptr;
  const bool lora = o.lora_rank > 0;
  if (lora && o.shard_optimizer)
    throw UsageError(
        "train: --shard-optimizer shards full fine-tuning's optimizer state; LoRA adapters "
        "are small, train them without it");
  // --shard-optimizer: the moments (and sharded masters) are created at the owned range's size.
  const int shard_ranks = o.shard_optimizer && !lora ? w.size : 1;
  TrainState st =
      TrainState::load(*ops, base, o.train_text_encoder && !lora, !lora, te_ops, w.rank, shard_ranks);
  if (w.size > 1 && w.is_root())
    log_info("train: gradients over ", comm->name(), ", buckets of ", o.bucket_mb, " MiB");
  if (lora) {
    DB_CHECK(o.lora_alpha >= 0 && std::isfinite(o.lora_alpha), "train: --lora-alpha must be >= 0");
    st.enable_lora(*ops, LoraOptions{o.lora_rank, o.lora_alpha, o.lora_text_encoder}, o.seed);
    // What full fine-tuning would hold beyond the weights: f32 gradients + 2 AdamW moments per parameter.
    const int64_t full = st.unet_buf.reg.param_count() +
                         (o.lora_text_encoder || o.train_text_encoder ? st.te_buf.reg.param_count() : 0);
    int64_t adapters = 0;
    for (const ModelBuffers* b : st.trained_buffers()) adapters += b->reg.param_count();
    if (w.is_root())
      log_info("train: LoRA rank ", o.lora_rank, ", alpha ",
               o.lora_alpha > 0 ? o.lora_alpha : float(o.lora_rank), ", ",
               st.unet_lora.reg.params().size() / 2, " UNet",
               o.lora_text_encoder ? str_cat(" + ", st.te_lora.reg.params().size() / 2, " text-encoder") : "",
               " projections: ", adapters, " trained parameters (", 100.0 * double(adapters) / double(full),
               "% of ", full, "); gradients + AdamW moments ", double(adapters) * 12 / (1 << 20),
               " MB instead of ", double(full) * 12 / (1 << 20), " MB (",
               double(full - adapters) * 12 / (1 << 20), " MB saved)");
  } else if (o.shard_optimizer && w.size > 1) {
    const int64_t saved = st.sharding_saves_bytes();
    if (w.is_root())
      log_info("train: --shard-optimizer: AdamW moments",
               st.unet_buf.master_sharded ? " and f32 master weights" : "", " split over ", w.size,
               " ranks, ", double(saved) / (1 << 20), " MiB saved on rank 0 (",
               st.unet_buf.master_sharded ? "12" : "8", " B per parameter outside its range",
               st.unet_buf.master_sharded ? "" : "; the f32 master is the working copy here, kept whole",
               ")");
  } else if (o.shard_optimizer && w.is_root()) {
    log_info("train: --shard-optimizer on 1 rank: nothing to shard");
  }

  // Resume: weights, moments, step, cursor. Every rank reads the checkpoint (shared file system).
  int64_t step = 0, consecutive_bad = 0;
  DataCursor cursor;
  std::string resumed_from;
  if (!o.resume.empty()) resumed_from = resolve_resume(o.out, o.resume);
  if (!resumed_from.empty()) {
    const nlohmann::json s = read_json_file(resumed_from + "/state.json");
    try {
      DB_CHECK(s.at("version").get<int>() == kStateVersion, resumed_from, "/state.json: version ",
               s.at("version"), ", this build reads ", kStateVersion);
      const std::vector<std::string> diffs = resume_differences(s, o, w, id);
      if (!diffs.empty()) {
        std::string all;
        for (const auto& d : diffs) all += (all.empty() ? "" : "; ") + d;
        throw AgreedError(str_cat("train: cannot resume from ", resumed_from, ", this run differs: ", all,
                                  " (resume with the checkpoint's model, data and options, or train into "
                                  "another --out)"),
                          w.is_root());
      }
      step = s.at("step").get<int64_t>();
      cursor.epoch = s.at("data_cursor").at("epoch").get<int64_t>();
      cursor.position = s.at("data_cursor").at("position").get<int64_t>();
      st.adam_step = s.at("adam_step").get<int64_t>();
      consecutive_bad = s.value("consecutive_nonfinite", int64_t(0));
    } catch (const nlohmann::json::exception& e) {
      throw Error(resumed_from, "/state.json: ", e.what());
    }
    if (o.max_steps > 0 && o.max_steps < step)  // the same on every rank: all exit 2 together
      throw UsageError(str_cat("train: --max-steps ", o.max_steps, " is below the step of the checkpoint ",
                               resumed_from, " (", step, "); resume with --max-steps >= ", step));
    load_checkpoint(*ops, resumed_from, st);
    if (w.is_root()) log_info("train: resumed from ", resumed_from, " at step ", step);
  } else if (o.resume == "auto" && w.is_root()) {
    log_info("train: --resume auto: no checkpoint in ", o.out, ", starting from step 0");
  }
  // All ranks must agree on where they are.
  for (const int64_t v : {step, cursor.epoch, cursor.position, st.adam_step}) {
    const int64_t hi = allreduce_max(v), lo = -allreduce_max(-v);  // both collectives on every rank
    DB_CHECK(hi == v && lo == v, "train: ranks disagree on the resumed step, data ",
             "cursor or optimizer step (is ", o.out, " on a shared file system?)");
  }

  DataLoaderOptions lo;
  lo.instance = o.instance;
  lo.class_data = o.class_data;
  lo.batch_size = o.batch_size;
  lo.rank = w.rank;
  lo.world_size = w.size;
  lo.seed = o.seed;
  lo.use_latents = o.use_cached_latents;
  lo.start = cursor;
  lo.vocab_size = base.text_encoder.vocab_size;
  DataLoader loader(lo);
  check_data_matches_model(base, loader, o.instance.size() == 1 ? o.instance[0] : o.instance[0] + " ...");
  const int accum = o.gradient_accumulation_steps;
  DB_CHECK(loader.batches_per_epoch() >= 1, "train: ", loader.examples_per_epoch(),
           " examples make no full global batch of ", loader.global_batch(), " (batch size ", o.batch_size,
           " x ", w.size, " ranks); lower --batch-size");
  int64_t total = o.max_steps;
  if (total <= 0)
    total = o.epochs > 0 ? std::max<int64_t>(1, o.epochs * loader.batches_per_epoch() / accum) : 800;

  StepOptions so;
  so.prior_loss_weight = o.prior_loss_weight;
  so.snr_gamma = o.snr_gamma;
  so.train_text_encoder = lora ? o.lora_text_encoder : o.train_text_encoder;
  so.gradient_checkpointing = o.gradient_checkpointing;
  so.max_grad_norm = o.max_grad_norm;
  so.adam = AdamWConfig{o.adam_beta1, o.adam_beta2, o.adam_epsilon, o.weight_decay};
  so.lr = make_lr_schedule(o.lr_scheduler, o.lr, o.lr_warmup_steps, total);
  const float offset = o.offset_noise ? kDreamboothOffsetNoise : 0.f;

  // The frozen base VAE, loaded on first use: the encoder for shards without cached latents, the
  // decoder for validation images. A GPU pair keeps it on the second device, beside the text encoder.
  Ops& vae_ops = te_ops ? *te_ops : *ops;
  std::unique_ptr<AutoencoderKL> vae;
  ParamRegistry vae_reg;
  Tensor vae_p;
  auto ensure_vae = [&]() -> AutoencoderKL& {
    if (!vae) {
      vae_reg = base.registry(Component::Vae);
      vae_p = to_backend(vae_ops, base.load(Component::Vae, vae_reg), vae_ops.activation_dtype());
      vae_ops.synchronize();
      vae = std::make_unique<AutoencoderKL>(base.vae, vae_reg, vae_p);
    }
    return *vae;
  };

  const std::string metrics_path = o.metrics.empty() ? o.out + "/metrics.jsonl" : o.metrics;
  MetricsLog metrics;
  if (w.is_root()) {
    fs::remove(o.out + "/model_index.json");  // OUT is not a finished pipeline until this run ends
    if (!resumed_from.empty()) {
      const MetricsTrim t = truncate_metrics(metrics_path, step);
      if (t.bytes_cut > 0)
        log_info("train: ", metrics_path, ": kept ", t.lines_kept, " lines through step ", t.last_step,
                 ", removed ", t.bytes_cut, " bytes logged after the checkpoint");
      if (t.last_step < step && fs::is_regular_file(metrics_path))
        log_warn("train: ", metrics_path, " ends at step ", t.last_step, " but the checkpoint is at step ",
                 step, " (a different --metrics file?); steps in between are not in it");
    }
    metrics = MetricsLog(metrics_path, resumed_from.empty());
    log_info("train: ", loader.instance_count(), " instance / ", loader.class_count(), " class samples, ",
             loader.examples_per_epoch(), " examples per epoch, global batch ", loader.global_batch(),
             " pairs x ", accum, " accumulation, ", w.size, " rank(s), steps ", step, " -> ", total,
             loader.latents() ? ", cached latents" : ", VAE-encoding pixels");
  }
  barrier();

  const char* fr = std::getenv("DREAMBOOTH_FAIL_RANK");
  const char* fsx = std::getenv("DREAMBOOTH_FAIL_STEP");
  const int fail_rank = fr ? std::atoi(fr) : o.fail_rank;
  const int64_t fail_step = fsx ? std::atoll(fsx) : o.fail_step;

  // Validation images (rank 0): generate over the trained models in memory and the base VAE.
  std::unique_ptr<GenerateModels> val_models;
  auto run_validation = [&](int64_t at_step) {
    if (w.is_root()) {
      const double tv = now_s();
      if (!val_models)
        val_models = borrow_generate_models(*ops, base, *st.te, *st.unet, ensure_vae(), te_ops);
      const std::string dir = validation_dir(o.out, at_step);
      fs::create_directories(o.out + "/validation");
      AtomicDir tmp(dir);
      GenerateOptions g;
      g.model = o.out + " (training step " + std::to_string(at_step) + ")";
      g.prompt = o.validation_prompt;
      g.num_images = o.validation_images;
      g.steps = o.validation_steps;
      g.seed = validation_seed(o.seed);
      g.out_dir = tmp.path();
      g.progress = false;
      g.this_rank_only = true;
      generate_images(*val_models, g);
      tmp.commit();
      std::fprintf(stderr, "validation: step %lld, %d images -> %s, %.1f s\n", (long long)at_step,
                   o.validation_images, dir.c_str(), now_s() - tv);
    }
    barrier();
  };

  Ctx ctx{*ops}, vae_ctx{vae_ops};
  TrainResult res;
  res.start_step = step;
  res.output = o.out;
  double last_print = 0, ema_step = 0;
  const int64_t samples_per_step = int64_t(loader.global_batch()) * (o.class_data.empty() ? 1 : 2) * accum;
  const uint32_t T = uint32_t(sched.num_train_timesteps());

  while (step < total) {
    if (w.rank == fail_rank && step == fail_step)
      throw Error("train: injected failure at step ", step, " (DREAMBOOTH_FAIL_RANK/DREAMBOOTH_FAIL_STEP)");
    const double t0 = now_s();
    double wait = 0;
    TrainStep ts(ctx, st, sched, so, comm.get(), size_t(o.bucket_mb * (1 << 20)), te_comm.get());
    for (int a = 0; a < accum; ++a) {
      Batch b = loader.next();
      wait += b.wait_seconds;
      const uint32_t key = uint32_t(b.step);  // the global batch counter: resume- and world-invariant
      const int64_t S = b.prompt_ids.dim(0);
      MicroBatch mb;
      mb.pairs = b.pairs;
      mb.prior = b.prior;
      mb.ids = b.prompt_ids;
      Tensor mean = b.latent_mean, logvar = b.latent_logvar;
      if (!b.latents)
        split_moments(
            to_host(vae_ops,
                    ensure_vae().encode(vae_ctx, to_backend(vae_ops, b.pixels, vae_ops.activation_dtype())),
                    DType::F32),
            &mean, &logvar);
      mb.latents = latents_from_moments(mean, logvar, draw_latent_eps(o.seed, key, b.slot, mean.shape()),
                                        base.vae.scaling_factor);
      mb.noise = Tensor::empty(mean.shape());
      const int64_t per = mean.numel() / S;
      Shape one = mean.shape();
      one[0] = 1;
      for (int64_t i = 0; i < S; ++i) {
        const uint32_t slot = uint32_t(b.slot[size_t(i)]);
        Tensor e = draw_training_noise(o.seed, key, slot, one, offset);
        std::memcpy(mb.noise.f32() + i * per, e.f32(), size_t(per) * 4);
        mb.timesteps.push_back(draw_timesteps(o.seed, key, slot, 1, int(T))[0]);
      }
      ts.micro_batch(std::move(mb), 1.f / float(accum), a + 1 == accum);
    }
    ts.update(step);
    const StepResult sr = ts.finish();
    const UpdateResult& ur = sr.update;
    double losses[3] = {sr.loss.loss, sr.loss.instance, sr.loss.prior};
    allreduce_sum(losses, 3);
    for (double& l : losses) l /= w.size;
    ++step;
    if (ur.applied) {
      consecutive_bad = 0;
    } else {
      ++consecutive_bad;
      ++res.skipped_steps;
      if (w.is_root())
        log_warn("train: step ", step, ": non-finite loss (", losses[0], ") or gradient norm (", ur.grad_norm,
                 "); update skipped (", consecutive_bad, " in a row, limit ", o.max_nonfinite_steps, ")");
      if (consecutive_bad >= o.max_nonfinite_steps)
        throw AgreedError(
            str_cat("train: ", consecutive_bad, " non-finite steps in a row (last at step ", step,
                    "); stopping without writing a checkpoint or output. Lower --lr, check the data, "
                    "or resume from the last checkpoint in ",
                    o.out),
            w.is_root());
    }
    const double dt = now_s() - t0;
    const MemoryStats mem = ops->memory_stats();  // backend memory: device memory on a GPU
    ops->reset_peak_memory();
    const MemoryStats mem2 = te_ops ? te_ops->memory_stats() : MemoryStats{};
    if (te_ops) te_ops->reset_peak_memory();
    ema_step = ema_step == 0 ? dt : 0.8 * ema_step + 0.2 * dt;
    res.last_loss = losses[0];
    if (w.is_root()) {
      nlohmann::json m = {{"step", step},
                          {"loss", losses[0]},
                          {"loss_instance", losses[1]},
                          {"loss_prior", losses[2]},
                          {"lr", ur.lr},
                          {"grad_norm", ur.grad_norm},
                          {"skipped", !ur.applied},
                          {"step_time_s", dt},
                          {"data_wait_s", wait},
                          {"rss_mb", rss_mb()},
                          {"mem_peak_mb", double(mem.peak) / (1 << 20)},
                          {"mem_reserved_mb", double(mem.reserved) / (1 << 20)}};
      if (te_ops) {  // the pair's second device (text encoder)
        m["mem_peak_mb_second"] = double(mem2.peak) / (1 << 20);
        m["mem_reserved_mb_second"] = double(mem2.reserved) / (1 << 20);
      }
      metrics.append_line(m.dump());
      const double t = now_s();
      if (o.progress_seconds <= 0 || t - last_print >= o.progress_seconds || step == total ||
          step == res.start_step + 1) {
        last_print = t;
        std::fprintf(
            stderr,
            "train: step %lld/%lld  loss %.4f (inst %.4f prior %.4f)  lr %.2e  grad_norm %.3f  %.2f s/step  "
            "%.1f samples/s  ETA %s\n",
            (long long)step, (long long)total, losses[0], losses[1], losses[2], double(ur.lr), ur.grad_norm,
            ema_step, double(samples_per_step) / std::max(ema_step, 1e-9),
            hms(ema_step * double(total - step)).c_str());
      }
    }
    // A signal on any rank stops every rank here (one tiny all-reduce per step); on the last step the
    // run just finishes.
    const bool stopping = any_rank(stop_requested()) && step < total;
    const bool due = o.checkpoint_every > 0 && step % o.checkpoint_every == 0;
    if (due && consecutive_bad > 0 && !stopping) {
      if (w.is_root())
        log_warn("train: step ", step, " was skipped (non-finite); no checkpoint written for it");
    } else if (due || stopping) {
      const HostState host =
          gather_state(*ops, *comm, te_comm.get(), st, true);  // every rank: a collective when sharded
      if (w.is_root()) {
        metrics.sync();  // the log on disk reaches at least every checkpoint's step
        const nlohmann::json s =
            checkpoint_state(o, step, loader.cursor(), st.adam_step, consecutive_bad, so.lr, w, id);
        write_checkpoint(*ops, o.out, step, st, base, host, s);
        for (const std::string& p : prune_checkpoints(o.out, o.keep_checkpoints))
          log_info("train: removed ", p);
        log_info("train: wrote ", o.out, "/", checkpoint_name(step));
      }
      barrier();
    }
    if (stopping) {
      if (w.is_root())
        log_warn("train: stopped by a signal after step ", step, "; ", o.out, "/", checkpoint_name(step),
                 " written (continue with --resume auto)");
      res.end_step = step;
      res.stopped = true;
      res.checkpoint = o.out + "/" + checkpoint_name(step);
      return res;
    }
    if (validate && (step % o.validation_every == 0 || step == total)) run_validation(step);
    if (o.stop_after > 0 && step >= o.stop_after) {
      res.end_step = step;
      return res;  // as if killed here (tests)
    }
  }
  res.end_step = step;
  if (w.is_root()) metrics.sync();
  if (w.is_root() && lora) {
    write_lora_output(*ops, o.out + "/" + kLoraWeights, st, save_dtype);
    res.output = o.out + "/" + kLoraWeights;
    log_info("train: wrote the LoRA weights to ", res.output, " (", hms(now_s() - t_start), " total, ",
             res.skipped_steps, " steps skipped)");
  } else if (const HostState host = gather_state(*ops, *comm, te_comm.get(), st, false); w.is_root()) {
    write_pipeline(o.out, st, host, base, save_dtype);
    log_info("train: wrote the pipeline to ", o.out, " (", hms(now_s() - t_start), " total, ",
             res.skipped_steps, " steps skipped)");
  }
  barrier();
  return res;
}

}  // namespace db
