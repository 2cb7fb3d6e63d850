import sharp, { type Sharp } from "sharp";
import type { BoxSize, ThumbnailFormat } from "./settings.js";

// Thumbnail variants with sharp: each size a box the image fits inside
// (aspect ratio kept, never enlarged), in each format. sharp writes no
// metadata (EXIF, GPS, XMP, ICC) unless asked to, and that is never asked.

export interface RenderedVariant {
  width: number;
  height: number;
  format: ThumbnailFormat;
  bytes: Buffer;
}

// A decoded image larger than this (e.g. a PNG decompression bomb: a few KiB
// that inflate to gigapixels) is refused before its pixels are decoded.
export const MAX_INPUT_PIXELS = 50_000_000;

const ENCODE = {
  webp: (s: Sharp) => s.webp({ quality: 80 }),
  jpeg: (s: Sharp) => s.jpeg({ quality: 82, mozjpeg: true }),
  png: (s: Sharp) => s.png({ compressionLevel: 9 }),
} as const;

export const CONTENT_TYPES: Record<ThumbnailFormat, string> = { webp: "image/webp", jpeg: "image/jpeg", png: "image/png" };

/** Variants of one image, largest first; sizes that come out the same are stored once. */
export async function renderVariants(image: Buffer, sizes: readonly BoxSize[], formats: readonly ThumbnailFormat[]): Promise<RenderedVariant[]> {
  // rotate() applies the EXIF orientation before the metadata is dropped.
  const base = sharp(image, { limitInputPixels: MAX_INPUT_PIXELS, failOn: "error" }).rotate();
  const out: RenderedVariant[] = [];
  const seen = new Set<string>();
  for (const box of sizes) {
    for (const format of formats) {
      const { data, info } = await ENCODE[format](base.clone().resize({ width: box.width, height: box.height, fit: "inside", withoutEnlargement: true })).toBuffer({ resolveWithObject: true });
      const id = `${info.width}x${info.height}.${format}`;
      if (seen.has(id)) continue;
      seen.add(id);
      out.push({ width: info.width, height: info.height, format, bytes: data });
    }
  }
  return out;
}

/** The format and pixel size of an uploaded image, read from its header only (no pixels decoded). */
export async function inspectImage(image: Buffer): Promise<{ format: string; width: number; height: number } | undefined> {
  try {
    const m = await sharp(image, { limitInputPixels: false }).metadata();
    return m.width && m.height ? { format: m.format, width: m.width, height: m.height } : undefined;
  } catch {
    return undefined;
  }
}
