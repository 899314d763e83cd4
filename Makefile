# anvil — bare-metal provisioning. `make help` lists the targets.
SHELL   := /bin/bash
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X main.version=$(VERSION)"
BINARIES := anvil-agent anvil-controller anvilctl anvil-firewall
# Kernel and initramfs for the agent's boot path (hack/fetch-kernel.sh,
# initramfs/). The boot test (test/vm) reads them from the same places.
export ANVIL_CACHE ?= /var/cache/anvil
KERNEL_DIR := $(ANVIL_CACHE)/kernel
INITRAMFS  := bin/anvil-initramfs.cpio.zst
INITRAMFS_MAX_MIB ?= 12

.PHONY: help deps build kernel initramfs kube-apiserver proto test test-unit lint bench lab lab-down clean

help:
	@echo "make build     static binaries in bin/"
	@echo "make initramfs agent initramfs for Debian's cloud kernel: $(INITRAMFS) (budget $(INITRAMFS_MAX_MIB) MiB)"
	@echo "make proto     regenerate proto/ Go code (pinned plugins)"
	@echo "make test      install dependencies, lint, run every test"
	@echo "make bench     benchmarks with ratios against baselines (docs/benchmarks.md)"
	@echo "make lab       QEMU mini-lab: LAB_MACHINES VMs (UEFI and BIOS) network-boot the agent, install LAB_IMAGE (tiny), end Provisioned"
	@echo "make lab-down  remove everything the lab created"
	@echo "make images-tiny  CI OS image (Debian cloud kernel, u-root, phones home): images/out/tiny.{raw,raw.zst,json}"
	@echo "make images-firewall  firewall image (Debian 12 + nftables, ip_forward, anvil-firewall service; feature firewall): images/out/debian-12-firewall.*"
	@echo "make images-debian  Debian 12 image (debootstrap, cloud-init NoCloud, phone-home): images/out/debian-12.{raw.zst,tar.zst} + catalogue entries"

deps:
	@hack/install-deps.sh

build:
	@mkdir -p bin
	CGO_ENABLED=0 go build $(GOFLAGS_BUILD) -o bin/anvil-agent ./agent/cmd/anvil-agent
	CGO_ENABLED=0 go build $(GOFLAGS_BUILD) -o bin/anvil-controller ./controller/cmd/anvil-controller
	CGO_ENABLED=0 go build $(GOFLAGS_BUILD) -o bin/anvilctl ./controller/cmd/anvilctl
	CGO_ENABLED=0 go build $(GOFLAGS_BUILD) -o bin/anvil-firewall ./firewall/cmd/anvil-firewall
	CGO_ENABLED=0 go build $(GOFLAGS_BUILD) -o bin/anvil-lab-chassis ./test/labkit/cmd/anvil-lab-chassis
	CGO_ENABLED=0 go build $(GOFLAGS_BUILD) -o bin/anvil-lab-redfish ./test/labkit/cmd/anvil-lab-redfish

# Debian's cloud kernel and the modules the initramfs loads, through apt,
# cached in $(KERNEL_DIR).
kernel: deps
	hack/fetch-kernel.sh $(KERNEL_DIR)

# Always rebuilt (u-root, ~40 s warm): the same sources give the same bytes.
initramfs: kernel
	go run ./initramfs/cmd/mkinitramfs -modules $(KERNEL_DIR)/modules -o $(INITRAMFS) \
		-max-mib $(INITRAMFS_MAX_MIB) -version $(VERSION)

proto:
	hack/gen-proto.sh

lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	go vet ./...

# kube-apiserver for the firewall's end-to-end test (test/kubeapi), built
# from the Go module proxy and cached in $(ANVIL_CACHE)/kube (cold ~5 min).
kube-apiserver: deps
	hack/build-kube-apiserver.sh

test: deps lint build initramfs images-tiny kube-apiserver
	go test -race -count=1 -timeout 20m ./...

bench: deps build
	hack/bench.sh

# The QEMU mini-lab (test/labkit): LAB_MACHINES VMs (UEFI and BIOS in
# turn, LAB_FIRMWARE=uefi|bios for one kind) in a network namespace of the
# lab's own network-boot the agent, get erased and, each as soon as it is
# Ready, install LAB_IMAGE (the tiny image by default), kexec and phone
# home. LAB_IMAGE= (empty) stops at Ready.
LAB_MACHINES ?= 3
LAB_IMAGE    ?= images/out/tiny.json
LAB_FIRMWARE ?= mix
lab: deps build initramfs images-tiny
	go build -o bin/anvil-lab ./test/labkit/cmd/anvil-lab
	bin/anvil-lab -machines $(LAB_MACHINES) -firmware $(LAB_FIRMWARE) -kernel $(KERNEL_DIR)/vmlinuz -initramfs $(INITRAMFS) \
		$(if $(LAB_IMAGE),-image $(LAB_IMAGE)) up

lab-down:
	go build -o bin/anvil-lab ./test/labkit/cmd/anvil-lab
	bin/anvil-lab down

clean:
	rm -rf bin .tools

# The Debian 12 image (images/debian/build.sh, as root): debootstrap from
# Debian's mirror (packages cached in $(ANVIL_CACHE)/debootstrap), a raw
# image made by anvil's rootfs installer, zstd, catalogue entries in
# images/out. Not part of make test (minutes); its test in images/debian
# runs once the image exists.
.PHONY: images images-debian images-tiny images-firewall
images: images-tiny images-debian images-firewall
images-debian: deps
	images/debian/build.sh

# The firewall image (images/firewall/build.sh, as root): the Debian 12
# image's build with images/firewall/recipe.sh (nftables, forwarding,
# anvil-firewall and its units); catalogue entries in images/out carry the
# "firewall" feature. Not part of make test (minutes); its tests in
# images/firewall run once the image exists. docs/firewall-image.md.
images-firewall: deps
	VERSION=$(VERSION) images/firewall/build.sh

# The anvil-tiny CI image (images/tiny): Debian's cloud kernel and a u-root
# initramfs whose tiny-init finds the NoCloud seed and phones home, on a
# 64 MiB GPT disk made with go-diskfs (no root, no loop devices). ~10 s
# warm. The same sources, kernel, VERSION and TINY_EPOCH give the same
# bytes; test/images boots it in QEMU.
TINY_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 1735689600)
images-tiny: kernel
	SOURCE_DATE_EPOCH=$(TINY_EPOCH) go run ./images/tiny/cmd/mktiny -kernel-dir $(KERNEL_DIR) -o images/out -version $(VERSION)
