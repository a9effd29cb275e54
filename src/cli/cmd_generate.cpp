// `dreambooth generate`: class images (step 3) and images from the tuned model (step 5).
#include <cstdio>

#include "dreambooth/cli/command.h"
#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"
#include "dreambooth/dist/world.h"
#include "dreambooth/pipelines/generate.h"
#include "option_checks.h"

namespace db {
namespace {

int run_generate(int argc, char** argv) {
  po::options_description opts("options");
  opts.add_options()                                                                            //
      ("model", po::value<std::string>()->required(), "model folder (diffusers layout)")        //
      ("prompt", po::value<std::string>()->required(), "text prompt, e.g. \"photo of a dog\"")  //
      ("negative-prompt", po::value<std::string>()->default_value(""),
       "what to steer away from (the unconditional half of guidance; default \"\")")  //
      ("out", po::value<std::string>()->required(),
       "output folder: NNNNN.png (or .jpg) per image and manifest.jsonl; created if missing")    //
      ("num-images", po::value<int>()->default_value(1), "number of images (indices 0 .. N-1)")  //
      ("steps", po::value<int>()->default_value(50), "denoising steps")                          //
      ("guidance", po::value<float>()->default_value(7.5f),
       "classifier-free guidance scale; <= 1 turns guidance off (one UNet half)")  //
      ("scheduler", po::value<std::string>()->default_value(""),
       "pndm | ddim | euler | euler_ancestral | dpmpp_2m | dpmpp_2m_karras | ddpm (default: the model's "
       "scheduler_config.json)")                                                                     //
      ("eta", po::value<float>()->default_value(0.f), "DDIM eta (0: deterministic)")                 //
      ("seed", po::value<uint64_t>()->default_value(0), "seed; image i is a function of (seed, i)")  //
      ("device", po::value<std::string>()->default_value("auto"), kDeviceHelp)                       //
      ("height", po::value<int>()->default_value(0),
       "image height (default: unet sample_size x VAE scale factor; a multiple of 8)")  //
      ("width", po::value<int>()->default_value(0), "image width (same rules)")         //
      ("batch-size", po::value<int>()->default_value(1),
       "images per UNet batch (2x rows with guidance); changes images only by fp32 rounding")  //
      ("format", po::value<std::string>()->default_value("png"), "png | jpg")                  //
      ("quality", po::value<int>()->default_value(95), "JPEG quality 1..100")                  //
      ("init-latents", po::value<std::string>()->default_value(""),
       "safetensors file with tensor \"latents\" [N, C, h, w] (PyTorch layout, unscaled); image i uses "
       "row i")  //
      ("skip-existing", po::bool_switch(),
       "keep images already in --out (made with the same settings, per manifest.jsonl) and make only the "
       "missing ones")  //
      ("lora", po::value<std::string>()->default_value(""),
       "LoRA weights (pytorch_lora_weights.safetensors from 'train --lora-rank', or diffusers' PEFT-format "
       "file) merged into the UNet / text encoder at load: W += scale * B A")                    //
      ("lora-scale", po::value<float>()->default_value(1.f, "1.0"), "scale of the LoRA update")  //
      ("quiet", po::bool_switch(), "no progress lines");
  po::variables_map vm;
  if (!parse_command_line(
          argc, argv, "dreambooth generate --model DIR --prompt TEXT --out DIR [options]",
          "Samples images from a Stable Diffusion model as diffusers' StableDiffusionPipeline does:\n"
          "the prompt and negative prompt are encoded once, classifier-free guidance runs both halves\n"
          "in one UNet batch, the scheduler denoises from seeded noise, the VAE decodes. Image i\n"
          "depends only on (seed, i) and the settings. Under `mpirun -np N` the batches of\n"
          "--batch-size consecutive images go to the ranks in turn (batch k to rank k mod N), and\n"
          "the files are byte-identical to one process's. Writes OUT/NNNNN.png (or\n"
          ".jpg) and OUT/manifest.jsonl (one line per image: settings and model fingerprint).\n"
          "Exit status: 0 done, 1 runtime error, 2 bad command line.",
          opts, vm))
    return 0;
  GenerateOptions o;
  o.model = vm["model"].as<std::string>();
  o.prompt = vm["prompt"].as<std::string>();
  o.negative_prompt = vm["negative-prompt"].as<std::string>();
  o.out_dir = vm["out"].as<std::string>();
  o.num_images = vm["num-images"].as<int>();
  o.steps = vm["steps"].as<int>();
  o.guidance = vm["guidance"].as<float>();
  o.scheduler = vm["scheduler"].as<std::string>();
  o.eta = vm["eta"].as<float>();
  o.seed = vm["seed"].as<uint64_t>();
  o.device = vm["device"].as<std::string>();
  o.height = vm["height"].as<int>();
  o.width = vm["width"].as<int>();
  o.batch_size = vm["batch-size"].as<int>();
  o.format = vm["format"].as<std::string>();
  if (o.format == "jpeg") o.format = "jpg";
  o.quality = vm["quality"].as<int>();
  o.init_latents = vm["init-latents"].as<std::string>();
  o.skip_existing = vm["skip-existing"].as<bool>();
  o.progress = !vm["quiet"].as<bool>();
  o.lora = vm["lora"].as<std::string>();
  o.lora_scale = vm["lora-scale"].as<float>();
  if (o.lora.empty() && !vm["lora-scale"].defaulted())
    throw UsageError("generate: --lora-scale needs --lora");
  if (o.out_dir.empty()) throw UsageError("generate: --out must name a folder");
  check_utf8("generate", "prompt", o.prompt);
  check_utf8("generate", "negative-prompt", o.negative_prompt);
  check_device("generate", o.device);

  GenerateResult r = generate_images(o);
  const World& w = world();
  const int64_t made = allreduce_sum(int64_t(r.made)), skipped = allreduce_sum(int64_t(r.skipped));
  const int64_t evals = allreduce_sum(r.unet_evals);
  if (w.is_root())
    log_info("generate: ", made, " images written to ", o.out_dir,
             (skipped ? str_cat(" (", skipped, " kept)") : ""), ", ", r.scheduler, " ", o.steps, " steps, ",
             r.width, "x", r.height, ", ", evals, " UNet evaluations, ", r.seconds, " s");
  return 0;
}

}  // namespace

DB_COMMAND(generate, "generate", "sample images (class images, or from a tuned model)", run_generate);

}  // namespace db
