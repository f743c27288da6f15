defmodule DSPEx.Clustering.Discovery.JSON do
  @moduledoc """
  A small strict JSON decoder (RFC 8259) for the Consul strategy: the project takes no Hex packages
  and OTP 25 has no `:json` module. Objects become maps with string keys, arrays lists, `null` nil.
  Uses OTP's `:json` when the runtime has it (OTP 27+).
  """
  import Bitwise

  @doc "Decodes one JSON document."
  @spec decode(binary()) :: {:ok, term()} | {:error, term()}
  def decode(text) when is_binary(text) do
    if function_exported?(:json, :decode, 3) do
      try do
        # apply/3: :json only exists on OTP 27+, keep the compiler quiet on older ones
        {value, :ok, rest} = apply(:json, :decode, [text, :ok, %{null: nil}])
        if skip_ws(rest) == "", do: {:ok, value}, else: {:error, :trailing_data}
      rescue
        e -> {:error, {:invalid_json, Exception.message(e)}}
      end
    else
      decode_own(text)
    end
  end

  @doc false
  @spec decode_own(binary()) :: {:ok, term()} | {:error, term()}
  def decode_own(text) do
    {value, rest} = value(skip_ws(text))

    case skip_ws(rest) do
      "" -> {:ok, value}
      _ -> {:error, :trailing_data}
    end
  catch
    {:json_error, reason} -> {:error, {:invalid_json, reason}}
  end

  defp value("{" <> rest), do: object(skip_ws(rest), %{})
  defp value("[" <> rest), do: array(skip_ws(rest), [])
  defp value("\"" <> rest), do: string(rest, [])
  defp value("true" <> rest), do: {true, rest}
  defp value("false" <> rest), do: {false, rest}
  defp value("null" <> rest), do: {nil, rest}
  defp value(<<c, _::binary>> = text) when c == ?- or c in ?0..?9, do: number(text)
  defp value(_), do: throw({:json_error, :unexpected_token})

  defp object("}" <> rest, acc), do: {acc, rest}

  defp object("\"" <> rest, acc) do
    {key, rest} = string(rest, [])

    case skip_ws(rest) do
      ":" <> rest ->
        {val, rest} = value(skip_ws(rest))
        acc = Map.put(acc, key, val)

        case skip_ws(rest) do
          "," <> rest -> object_key(skip_ws(rest), acc)
          "}" <> rest -> {acc, rest}
          _ -> throw({:json_error, :expected_comma_or_brace})
        end

      _ ->
        throw({:json_error, :expected_colon})
    end
  end

  defp object(_, _), do: throw({:json_error, :expected_key})

  # after a comma a key is mandatory (no trailing comma)
  defp object_key("\"" <> _ = text, acc), do: object(text, acc)
  defp object_key(_, _), do: throw({:json_error, :expected_key})

  defp array("]" <> rest, acc), do: {Enum.reverse(acc), rest}
  defp array(text, acc), do: array_item(text, acc)

  defp array_item(text, acc) do
    {val, rest} = value(text)

    case skip_ws(rest) do
      "," <> rest -> array_item(skip_ws(rest), [val | acc])
      "]" <> rest -> {Enum.reverse([val | acc]), rest}
      _ -> throw({:json_error, :expected_comma_or_bracket})
    end
  end

  defp string("\"" <> rest, acc), do: {IO.iodata_to_binary(Enum.reverse(acc)), rest}

  defp string("\\" <> <<e, rest::binary>>, acc) do
    case e do
      ?" -> string(rest, [?" | acc])
      ?\\ -> string(rest, [?\\ | acc])
      ?/ -> string(rest, [?/ | acc])
      ?b -> string(rest, [?\b | acc])
      ?f -> string(rest, [?\f | acc])
      ?n -> string(rest, [?\n | acc])
      ?r -> string(rest, [?\r | acc])
      ?t -> string(rest, [?\t | acc])
      ?u -> unicode_escape(rest, acc)
      _ -> throw({:json_error, :bad_escape})
    end
  end

  defp string(<<c, _::binary>>, _acc) when c < 0x20, do: throw({:json_error, :control_character})

  defp string(<<c::utf8, rest::binary>>, acc), do: string(rest, [<<c::utf8>> | acc])
  defp string(_, _), do: throw({:json_error, :unterminated_string})

  defp unicode_escape(<<hex::binary-size(4), rest::binary>>, acc) do
    case hex_value(hex) do
      hi when hi in 0xD800..0xDBFF ->
        with "\\u" <> <<hex2::binary-size(4), rest2::binary>> <- rest,
             lo when lo in 0xDC00..0xDFFF <- hex_value(hex2) do
          cp = 0x10000 + ((hi - 0xD800) <<< 10) + (lo - 0xDC00)
          string(rest2, [<<cp::utf8>> | acc])
        else
          _ -> throw({:json_error, :lone_surrogate})
        end

      lo when lo in 0xDC00..0xDFFF ->
        throw({:json_error, :lone_surrogate})

      cp ->
        string(rest, [<<cp::utf8>> | acc])
    end
  end

  defp unicode_escape(_, _), do: throw({:json_error, :bad_unicode_escape})

  defp hex_value(hex) do
    case Integer.parse(hex, 16) do
      {v, ""} -> v
      _ -> throw({:json_error, :bad_unicode_escape})
    end
  end

  @number ~r/\A-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/
  defp number(text) do
    case Regex.run(@number, text, capture: :all) do
      [literal | groups] ->
        rest = binary_part(text, byte_size(literal), byte_size(text) - byte_size(literal))
        {parse_number(literal, groups), rest}

      nil ->
        throw({:json_error, :bad_number})
    end
  end

  defp parse_number(literal, [_int]), do: String.to_integer(literal)
  defp parse_number(literal, [_int, ""]), do: String.to_integer(literal)

  defp parse_number(literal, [_int, frac | _]) do
    # "1e5" has no fraction; Float.parse wants one only for its own notation, so normalise.
    normalised =
      if frac == "", do: String.replace(literal, ~r/[eE]/, ".0e", global: false), else: literal

    {f, ""} = Float.parse(normalised)
    f
  end

  defp skip_ws(<<c, rest::binary>>) when c in [?\s, ?\t, ?\n, ?\r], do: skip_ws(rest)
  defp skip_ws(text), do: text
end
