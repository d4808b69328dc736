// Decodes one Kafka message value the way Pinot's JSONMessageDecoder + JSONRecordExtractor do
// (plugin pinot-json, which Maven Central does not serve here, so it cannot be on our
// classpath). Those two classes are small: parse the bytes with JsonUtils.bytesToMap, then for
// each field the table reads, put BaseRecordExtractor.convert(value) (null stays null) into a
// GenericRow. This is a minimal equivalent of that, built on the same Pinot SPI pieces.
package cdc.pinot;

import java.util.Map;
import java.util.Set;
import javax.annotation.Nullable;
import org.apache.pinot.spi.data.readers.BaseRecordExtractor;
import org.apache.pinot.spi.data.readers.GenericRow;
import org.apache.pinot.spi.data.readers.RecordExtractorConfig;
import org.apache.pinot.spi.utils.JsonUtils;

final class FlatJsonDecoder extends BaseRecordExtractor<Map<String, Object>> {
  private Set<String> _fields = Set.of();

  @Override
  public void init(@Nullable Set<String> fields, @Nullable RecordExtractorConfig config) {
    _fields = fields == null ? Set.of() : Set.copyOf(fields);
  }

  /** Message bytes -> row, as the server's decoder would produce it. */
  GenericRow decode(byte[] payload) throws java.io.IOException {
    return extract(JsonUtils.bytesToMap(payload), new GenericRow());
  }

  @Override
  public GenericRow extract(Map<String, Object> from, GenericRow to) {
    if (_fields.isEmpty()) {
      from.forEach((k, v) -> to.putValue(k, v == null ? null : convert(v)));
    } else {
      for (String field : _fields) {
        Object v = from.get(field);
        to.putValue(field, v == null ? null : convert(v));
      }
    }
    return to;
  }
}
