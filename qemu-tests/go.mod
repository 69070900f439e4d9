module github.com/sysupdate/sysupdate/qemu-tests

go 1.26.8

require github.com/sysupdate/sysupdate v0.0.0

require golang.org/x/sys v0.49.0

replace github.com/sysupdate/sysupdate => ../
