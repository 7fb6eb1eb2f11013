#include <deepinfra.h>
#include <string.h>
dinf_status emu_device_query(int32_t device, dinf_device_info *info) {
    (void)device;
    info->usable = 1;
    return DINF_STATUS_OK;
}
