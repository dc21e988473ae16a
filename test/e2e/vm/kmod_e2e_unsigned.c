// SPDX-License-Identifier: GPL-2.0
/*
 * kmod-operator e2e: a module nobody signed. test/e2e/vm-image.sh compiles
 * it against Debian's linux-headers for the VM's kernel (gcc and kbuild, no
 * signing step) and installs it under /lib/modules/<release>/extra. With
 * module.sig_enforce=1 the kernel refuses it (EKEYREJECTED, "Key was
 * rejected by service"); without, it loads and taints the kernel (E:
 * unsigned, O: out of tree).
 */
#include <linux/init.h>
#include <linux/module.h>

static int __init kmod_e2e_unsigned_init(void)
{
	pr_info("kmod_e2e_unsigned: loaded\n");
	return 0;
}

static void __exit kmod_e2e_unsigned_exit(void)
{
}

module_init(kmod_e2e_unsigned_init);
module_exit(kmod_e2e_unsigned_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kmod-operator e2e: an unsigned out-of-tree module");
