#!/usr/bin/env bash
# One entry point that sets everything up on a fresh machine, then runs a job.
#   ./dev.sh demo   LiDO vs GBO and Simplex on 4 new scenes from the committed networks
#                   (tables, Fig. 5, contact sheet) -> results/lido_demo/
#   ./dev.sh render-demo  render random scenes with the JAX renderer -> results/demo/
#   ./dev.sh test   run the test suite (what CI runs)
#   ./dev.sh bench  render benchmarks -> results/render_speed.json, results/render_backends.json
#   ./dev.sh bench-hypergrad  hypergradients vs jaxopt/optimistix -> results/hypergrad.json
#   ./dev.sh simopt ARGS       python -m simopt_jax ARGS (e.g. run --task scenes --method ...)
#   ./dev.sh bench-simopt [--quick]  both simulator-optimisation benchmarks -> results/simopt_*
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}

# Debian's EGL and Mesa (software OpenGL) for backend="gl"; the X11 client
# libraries that bpy links against for backend="blender" (no display is used).
GL_PACKAGES="libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri"
BLENDER_PACKAGES="libx11-6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libsm6 libice6 libxext6"

system_packages() {
  dpkg -s $GL_PACKAGES $BLENDER_PACKAGES >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      $GL_PACKAGES $BLENDER_PACKAGES >/dev/null
  else
    echo "dev.sh: backends gl/blender need: apt-get install $GL_PACKAGES $BLENDER_PACKAGES (as root)" >&2
  fi
}

setup() {
  system_packages
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q uv
  # uv ignores pip's config; it needs the system certificates to reach the registry.
  UV_NATIVE_TLS=1 UV_COMPILE_BYTECODE=1 "$VENV/bin/uv" pip install -q \
    --python "$VENV/bin/python" --override overrides.txt -e ".[test,bench,gl,ray,bo]"
  # backend="blender": bpy 5.0.1 and numpy<2 in a folder of their own (render.blender).
  "$VENV/bin/python" -m render.blender install >/dev/null
}

cmd=${1:-}
shift || true
case "$cmd" in
  demo)  setup; exec "$VENV/bin/python" -m lido_jax demo "$@" ;;
  render-demo) setup; exec "$VENV/bin/python" -m render.demo "$@" ;;
  test)  setup
    # One on-disk compilation cache per test run: conftest drops JAX's in-memory caches
    # after every module (memory), and the modules and notebook kernels compile the same
    # renderers again; compilations over 1 s are read back from here instead.
    export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$(mktemp -d -t jax-cache-XXXXXX)}"
    exec "$VENV/bin/python" -m pytest "$@" ;;
  bench) setup; exec "$VENV/bin/python" -m benchmarks.render_speed "$@" ;;
  bench-hypergrad) setup; exec "$VENV/bin/python" -m benchmarks.hypergrad "$@" ;;
  simopt) setup; exec "$VENV/bin/python" -m simopt_jax "$@" ;;
  bench-simopt) setup; "$VENV/bin/python" -m benchmarks.simopt_scenes "$@"
    exec "$VENV/bin/python" -m benchmarks.simopt_shapes "$@" ;;
  *) echo "usage: ./dev.sh {demo|render-demo|test|bench|bench-hypergrad|simopt|bench-simopt} [args...]" >&2; exit 2 ;;
esac
