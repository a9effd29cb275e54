// `dreambooth prepare --images DIR --prompt TEXT --model MODEL --out PATH`: photos -> HDF5 shard(s).
#include <optional>
#include <string>

#include "dreambooth/cli/command.h"
#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/pipelines/prepare.h"
#include "option_checks.h"

namespace db {
namespace {

// --resolution must give latents the UNet can halve at every down block (else train fails later in a
// skip-connection concat): a multiple of the VAE factor x the UNet's. A model folder that does not open
// is left to prepare() to report.
void check_resolution(int resolution, const std::string& model_dir) {
  if (resolution <= 0) return;
  std::optional<ModelFolder> m;
  try {
    m.emplace(ModelFolder::open(model_dir));
  } catch (const std::exception&) {
    return;
  }
  const int vae = m->vae.downscale_factor();
  const int unet = 1 << (int(m->unet.block_out_channels.size()) - 1);
  if (resolution % (vae * unet) != 0)
    throw UsageError(str_cat("prepare: --resolution ", resolution, " is not a multiple of ", vae * unet,
                             " (the VAE downscale factor ", vae, " x the UNet's ", unet, " of ", model_dir,
                             "), e.g. ", std::max(1, resolution / (vae * unet)) * vae * unet));
}

int run_prepare(int argc, char** argv) {
  po::options_description opts("options");
  opts.add_options()                                                                                 //
      ("images", po::value<std::string>()->required(), "folder of JPEG/PNG photos (not recursive)")  //
      ("prompt", po::value<std::string>()->required(),
       "prompt for every image, e.g. \"photo of unqtkn dog\"")                                             //
      ("model", po::value<std::string>()->required(), "diffusers model folder (tokenizer/, unet/, vae/)")  //
      ("out", po::value<std::string>()->required(),
       "output shard; under mpirun -np N each rank writes OUT-RRRRR-of-NNNNN.h5 (OUT without .h5)")  //
      ("resolution", po::value<int>()->default_value(0),
       "square side in pixels (default: the model's, unet sample_size x VAE downscale factor)")  //
      ("crop", po::value<std::string>()->default_value("center"), "center | random")             //
      ("seed", po::value<uint64_t>()->default_value(0), "seed of the random crops")              //
      ("latents", "also store the VAE posterior moments (mean, logvar) from the model's VAE")    //
      ("device", po::value<std::string>()->default_value("auto"), kDeviceHelp)                   //
      ("overwrite", "replace existing output shards")                                            //
      ("strict", "fail on the first bad image (and write nothing) instead of skipping it")       //
      ("max-pixels", po::value<int64_t>()->default_value(89'478'485),
       "refuse images with more pixels than this (decompression-bomb limit)")  //
      ("progress-every", po::value<int>()->default_value(0),
       "log progress every N images (default: every ~2 s)");
  po::variables_map vm;
  if (!parse_command_line(
          argc, argv, "dreambooth prepare --images DIR --prompt TEXT --model MODEL --out PATH [options]",
          "Decodes every regular file in DIR (sorted by name; hidden files skipped; format sniffed from\n"
          "the bytes), applies the EXIF orientation, resizes the short side to the resolution (PIL\n"
          "bilinear) and crops a square, tokenises the prompt with the model's tokenizer and writes an\n"
          "HDF5 shard (docs/DATA_FORMAT.md). Unreadable images are skipped and listed at the end\n"
          "(--strict: fatal). Under mpirun -np N image i goes to rank i mod N. Nothing that looks like a\n"
          "shard is left behind by a failed run.",
          opts, vm))
    return 0;
  PrepareOptions o;
  o.images_dir = vm["images"].as<std::string>();
  o.prompt = vm["prompt"].as<std::string>();
  o.model_dir = vm["model"].as<std::string>();
  o.out = vm["out"].as<std::string>();
  o.resolution = vm["resolution"].as<int>();
  const std::string crop = vm["crop"].as<std::string>();
  if (crop == "center")
    o.crop = CropMode::Center;
  else if (crop == "random")
    o.crop = CropMode::Random;
  else
    throw UsageError("prepare: --crop must be center or random, got '" + crop + "'");
  if (o.resolution < 0) throw UsageError("prepare: --resolution must be positive");
  check_utf8("prepare", "prompt", o.prompt);
  o.seed = vm["seed"].as<uint64_t>();
  o.latents = vm.count("latents") > 0;
  o.device = vm["device"].as<std::string>();
  check_device("prepare", o.device);
  o.overwrite = vm.count("overwrite") > 0;
  o.strict = vm.count("strict") > 0;
  o.max_pixels = vm["max-pixels"].as<int64_t>();
  if (o.max_pixels <= 0) throw UsageError("prepare: --max-pixels must be positive");
  o.progress_every = vm["progress-every"].as<int>();
  check_resolution(o.resolution, o.model_dir);
  try {
    prepare(o);
  } catch (const CollectiveError& e) {
    // Every rank knows and has cleaned up: exit 1 together, no MPI_Abort; one rank prints.
    if (e.report_here) log_message(LogLevel::Error, e.what());
    return 1;
  }
  return 0;
}

}  // namespace

DB_COMMAND(prepare, "prepare", "photos -> HDF5 training shard(s) (decode, resize, crop, tokenise)",
           run_prepare);

}  // namespace db
