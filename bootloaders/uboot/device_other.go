//go:build !linux

package uboot

import (
	"fmt"
	"os"
)

func inspectDevice(path string) (devInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return devInfo{}, fmt.Errorf("uboot: environment device: %w (check the device column of fw_env.config)", err)
	}
	return inspectFile(path, fi)
}

func openDevice(path string, write bool) (Device, error) {
	return openFile(path, write)
}
