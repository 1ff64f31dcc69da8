#!/usr/bin/env bash
# Install the pinned kind and kubectl into ./.tools/bin, verifying each download's sha256
# against hack/versions.env. Refuses (never skips verification) when a checksum is missing or
# does not match. Where the release binaries cannot be downloaded (no route to GitHub/dl.k8s.io),
# or with --from-source, builds them from their Go modules instead (slirp_conformance/kind_tools.py).
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# SLIRP_VERSIONS_ENV: another pins file (self-tests); default hack/versions.env.
# shellcheck source=hack/versions.env
. "${SLIRP_VERSIONS_ENV:-$REPO/hack/versions.env}"

usage() {
  cat <<USAGE
Usage: hack/install-tools.sh [--kubevirt-version VERSION | --all] [--dir DIR] [--from-source]
       hack/install-tools.sh --fetch-checksums

Installs the kind and kubectl pinned for a KubeVirt release (hack/versions.env) into
DIR/bin (default: $REPO/.tools/bin), each verified against its pinned sha256.

  --kubevirt-version V  pins of this KubeVirt release (default: $KUBEVIRT_DEFAULT_VERSION)
  --all                 every kind/kubectl pinned for any supported release (kept side by
                        side in DIR/dist; DIR/bin links the --kubevirt-version ones)
  --dir DIR             install root (default: $REPO/.tools)
  --from-source         build kind (module sigs.k8s.io/kind) and kubectl (k8s.io/kubernetes) at
                        the pinned versions with Go instead of downloading them; cached by
                        version in ~/.cache/slirp-conformance/go. Also what happens, with a
                        line saying so, when a download fails. Needs Go and hack/setup.sh.
  --fetch-checksums     print the upstream-published sha256 of every pinned binary as
                        lines for hack/versions.env (needs network; installs nothing).
                        Review them against the release pages before pasting.
USAGE
}


version="$KUBEVIRT_DEFAULT_VERSION"; all=false; root="$REPO/.tools"; fetch=false; from_source=false
while [ $# -gt 0 ]; do
  case "$1" in
    --kubevirt-version) [ $# -ge 2 ] || die "--kubevirt-version needs a value"; version="$2"; shift ;;
    --all) all=true ;;
    --dir) [ $# -ge 2 ] || die "--dir needs a value"; root="$2"; shift ;;
    --fetch-checksums) fetch=true ;;
    --from-source) from_source=true ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

case "$(uname -s)" in Linux) os=linux ;; Darwin) os=darwin ;; *) die "unsupported OS $(uname -s)" ;; esac
case "$(uname -m)" in x86_64|amd64) arch=amd64 ;; aarch64|arm64) arch=arm64 ;; *) die "unsupported CPU $(uname -m)" ;; esac

# "v1.5.3" -> "1_5" after checking it is a supported release version.
minor_key() {
  local v="$1"
  [[ "$v" =~ ^v?([0-9]+)\.([0-9]+)\.([0-9]+)$ ]] ||
    die "KubeVirt version '$v' is not vMAJOR.MINOR.PATCH; supported: v${KUBEVIRT_SUPPORTED_MINORS%% *}.0..v${KUBEVIRT_SUPPORTED_MINORS##* }.x"
  local m="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
  [[ " $KUBEVIRT_SUPPORTED_MINORS " == *" $m "* ]] ||
    die "KubeVirt $v is outside the supported range v${KUBEVIRT_SUPPORTED_MINORS%% *}.0..v${KUBEVIRT_SUPPORTED_MINORS##* }.x"
  echo "${m/./_}"
}

pin() { local var="KUBEVIRT_$1_$2"; [ -n "${!var:-}" ] || die "hack/versions.env has no $var"; echo "${!var}"; }

url_for() {  # tool version
  local template
  if [ "$1" = kind ]; then template="$KIND_URL_TEMPLATE"; else template="$KUBECTL_URL_TEMPLATE"; fi
  template="${template//\{version\}/$2}"; template="${template//\{os\}/$os}"; echo "${template//\{arch\}/$arch}"
}

sha_var() { local v="${2//./_}"; echo "$(echo "$1" | tr '[:lower:]' '[:upper:]')_${v}_SHA256_${os}_${arch}"; }

sha256_of() {
  if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

download() {  # url dest; non-zero when it fails
  command -v curl >/dev/null || { echo "install-tools: curl is missing" >&2; return 1; }
  curl -fsSL --retry 3 --connect-timeout 20 --max-time 600 -o "$2" "$1"
}

# What bin/<tool> links to, per tool (the verified download or the build from source).
declare -A installed=()

build_one() {  # tool version: from its Go module, into dist/<tool>-<version>-<os>-<arch>-source
  local tool="$1" ver="$2" dest
  dest="$root/dist/$tool-$ver-$os-$arch-source"
  need_venv
  echo "install-tools: building $tool $ver from its Go module (cached by version; a cold build of kubectl takes minutes)"
  (cd "$REPO" && "$PYTHON" -m slirp_conformance.kind_tools "$tool" "$ver" "$dest") || exit $?
  installed[$tool]="$(basename "$dest")"
}

install_one() {  # tool version
  local tool="$1" ver="$2" var want got dest url
  if $from_source; then build_one "$tool" "$ver"; return; fi
  var="$(sha_var "$tool" "$ver")"; want="${!var:-}"
  [ -n "$want" ] || die "no pinned sha256 for $tool $ver ($os/$arch): $var is empty in hack/versions.env (TODO). Refusing to install an unverified binary. Fill it from the upstream checksum (hack/install-tools.sh --fetch-checksums on a networked machine, then review) or install $tool $ver yourself and put it on PATH."
  dest="$root/dist/$tool-$ver-$os-$arch"
  mkdir -p "$root/dist" "$root/bin"
  if [ -f "$dest" ] && [ "$(sha256_of "$dest")" = "$want" ]; then
    echo "install-tools: $tool $ver already installed and verified"
  else
    url="$(url_for "$tool" "$ver")"
    echo "install-tools: downloading $tool $ver from $url"
    if ! download "$url" "$dest.partial"; then
      rm -f "$dest.partial"
      echo "install-tools: download failed: $url; building $tool $ver from source instead"
      build_one "$tool" "$ver"
      return
    fi
    got="$(sha256_of "$dest.partial")"
    if [ "$got" != "$want" ]; then
      rm -f "$dest.partial"
      die "sha256 mismatch for $tool $ver: got $got, pinned $want ($var). Not installed."
    fi
    chmod 0755 "$dest.partial"; mv "$dest.partial" "$dest"
  fi
  installed[$tool]="$(basename "$dest")"
}

link() { ln -sfn "../dist/${installed[$1]}" "$root/bin/$1"; }

fetch_checksums() {
  command -v curl >/dev/null || die "curl is needed"
  local key seen=" " tool ver sum
  for m in $KUBEVIRT_SUPPORTED_MINORS; do
    key="${m/./_}"
    for tool in kind kubectl; do
      if [ "$tool" = kind ]; then ver="$(pin "$key" KIND)"; else ver="$(pin "$key" KUBECTL)"; fi
      [[ "$seen" == *" $tool-$ver "* ]] && continue
      seen="$seen$tool-$ver "
      if [ "$tool" = kind ]; then
        sum="$(curl -fsSL --max-time 60 "https://github.com/kubernetes-sigs/kind/releases/download/$ver/kind-$os-$arch.sha256sum" | cut -d' ' -f1)"
      else
        sum="$(curl -fsSL --max-time 60 "$(url_for kubectl "$ver").sha256")"
      fi
      [[ "$sum" =~ ^[0-9a-f]{64}$ ]] || die "no checksum published for $tool $ver ($os/$arch)"
      echo "$(sha_var "$tool" "$ver")=\"$sum\""
    done
  done
}

if $fetch; then fetch_checksums; exit 0; fi

key="$(minor_key "$version")"
if $all; then
  for m in $KUBEVIRT_SUPPORTED_MINORS; do
    install_one kind "$(pin "${m/./_}" KIND)"
    install_one kubectl "$(pin "${m/./_}" KUBECTL)"
  done
fi
kind_version="$(pin "$key" KIND)"; kubectl_version="$(pin "$key" KUBECTL)"
install_one kind "$kind_version"
install_one kubectl "$kubectl_version"
mkdir -p "$root/bin"
link kind
link kubectl
echo "install-tools: $root/bin has kind $kind_version and kubectl $kubectl_version (KubeVirt $version); put it first on PATH:"
echo "  export PATH=\"$root/bin:\$PATH\""
