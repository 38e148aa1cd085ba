#!/usr/bin/env bash
# Pack what tools/gpu_lease.sh needs on a bare, offline GPU machine (Python 3.12, CUDA torch, no miditok & co.):
# py3.12 wheels of the packages its image lacks, and the data cache (music21 MIDI, embedded MAESTRO, BPE tokenizers).
set -eu
cd "$(dirname "$0")/.."
mkdir -p .gpucarry/whl
PKGS="asttokens==3.0.2 chardet==7.7.0 comm==0.2.3 debugpy==1.8.22 entrypoints==0.4.2 executing==2.3.0 fastcore==1.14.5
fastjsonschema==2.22.3 importlib_resources==7.1.0 ipykernel==7.4.0 ipython==9.18.1 ipython_pygments_lexers==1.1.1 jedi==0.20.1
jsonpickle==4.1.4 jsonschema-specifications==2025.9.1 jsonschema==4.26.0 jupyter_client==8.10.0 jupyter_core==5.9.1
matplotlib-inline==0.2.2 miditok==3.1.0 mido==1.3.3 more-itertools==11.2.1 music21==10.5.1 nbclient==0.11.0 nbformat==5.11.1
nest-asyncio2==1.7.4 papermill==2.7.0 parso==0.8.7 pexpect==4.9.0 platformdirs==4.14.8 prompt_toolkit==3.0.53 ptyprocess==0.7.0
pure_eval==0.2.4 pyzmq==27.3.0 referencing==0.37.0 rpds-py==2026.9.1 stack-data==0.6.3 symusic==0.5.8 tenacity==9.2.1
tornado==6.6.1 traitlets==5.16.1 wcwidth==0.9.4 webcolors==25.10.0 pySmartDL==1.3.4"
for p in $PKGS; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux2014_x86_64 -d .gpucarry/whl "$p"
done
tar czf .gpucarry/cache.tgz -C data/cache music21 miditok-3.1.0 $( [ -d data/cache/bpe ] && echo bpe )
du -sh .gpucarry
