"""GT + LQ + stored enhanced-HR target (teacher output) triplets for distillation (DIPNet pipeline, step 2)."""
from os import path as osp

from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import FileClient, imfrombytes, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY

from ddsr.errors import DDSRError


@DATASET_REGISTRY.register()
class EnhancedPairedImageDataset(PairedImageDataset):
    """BasicSR's PairedImageDataset plus ``dataroot_enhanced``: returns lq, gt and ``enhanced``.

    The enhanced image of an LQ image has the LQ image's name (as ``ddsr make-enhanced-hr`` writes it; LMDB key
    = LQ key) and the GT's size. In training, gt and enhanced get the same random crop and all three the same
    flips/rotations. ``color: y`` and mean/std normalisation are not supported (KD targets are RGB in [0, 1]).

    Args:
        opt (dict): PairedImageDataset's options plus dataroot_enhanced (str): folder or .lmdb of the targets.
    """

    def __init__(self, opt):
        super().__init__(opt)
        if 'dataroot_enhanced' not in opt:
            raise DDSRError(f'datasets.{opt.get("phase", "train")}: EnhancedPairedImageDataset needs dataroot_enhanced')
        if opt.get('color') == 'y' or self.mean is not None or self.std is not None:
            raise DDSRError('EnhancedPairedImageDataset: color y and mean/std normalisation are not supported')
        self.enhanced_folder = opt['dataroot_enhanced']
        if self.io_backend_opt['type'] == 'lmdb':
            self.io_backend_opt['db_paths'] = [self.lq_folder, self.gt_folder, self.enhanced_folder]
            self.io_backend_opt['client_keys'] = ['lq', 'gt', 'enhanced']
        for item in self.paths:
            item['enhanced_path'] = self._enhanced_path(item['lq_path'])
        if self.io_backend_opt['type'] != 'lmdb':
            missing = [p['enhanced_path'] for p in self.paths if not osp.isfile(p['enhanced_path'])]
            if missing:
                raise DDSRError(f'dataroot_enhanced {self.enhanced_folder}: {len(missing)} of {len(self.paths)} '
                                f'targets missing, e.g. {missing[0]} (run ddsr make-enhanced-hr on dataroot_lq)')

    def _enhanced_path(self, lq_path: str) -> str:
        if self.io_backend_opt['type'] == 'lmdb':
            return lq_path  # same key in the enhanced LMDB
        return osp.join(self.enhanced_folder, osp.splitext(osp.basename(lq_path))[0] + '.png')

    def __getitem__(self, index):
        if self.file_client is None:
            self.file_client = FileClient(self.io_backend_opt.pop('type'), **self.io_backend_opt)
        scale = self.opt['scale']
        paths = self.paths[index]
        img_gt = imfrombytes(self.file_client.get(paths['gt_path'], 'gt'), float32=True)
        img_lq = imfrombytes(self.file_client.get(paths['lq_path'], 'lq'), float32=True)
        img_enh = imfrombytes(self.file_client.get(paths['enhanced_path'], 'enhanced'), float32=True)
        if self.opt['phase'] != 'train':
            img_gt = img_gt[0:img_lq.shape[0] * scale, 0:img_lq.shape[1] * scale, :]
        if img_enh.shape != img_gt.shape:
            raise DDSRError(f'enhanced target {paths["enhanced_path"]} is {img_enh.shape[:2]}, GT {img_gt.shape[:2]}')
        if self.opt['phase'] == 'train':
            (img_gt, img_enh), img_lq = paired_random_crop([img_gt, img_enh], img_lq, self.opt['gt_size'], scale,
                                                           paths['gt_path'])
            img_gt, img_enh, img_lq = augment([img_gt, img_enh, img_lq], self.opt['use_hflip'], self.opt['use_rot'])
        img_gt, img_enh, img_lq = img2tensor([img_gt, img_enh, img_lq], bgr2rgb=True, float32=True)
        return {'lq': img_lq, 'gt': img_gt, 'enhanced': img_enh, 'lq_path': paths['lq_path'],
                'gt_path': paths['gt_path'], 'enhanced_path': paths['enhanced_path']}
